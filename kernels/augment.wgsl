// Per-sample image augmentation on NHWC f32 images (values in [0, 1] until normalised), one
// parameter record per sample. The pipeline of one view, in torchvision's order:
//   unpack_bytes      uint8 -> f32 / 255 (once per batch, shared by the views)
//   resample_rows     crop columns [left, left+w) -> out_w columns (+ horizontal flip)
//   resample_cols     crop rows [top, top+h) -> out_h rows; clamp to [0, 1]
//   colour            colour jitter (4 ops in the sample's random order) and grayscale, in place
//   blur_rows         horizontal Gaussian (or copy when the sample has no blur)
//   blur_cols_finish  vertical Gaussian, solarize, normalise ((x - mean) / std)
// plus rescale_bilinear (torch F.interpolate bilinear, align_corners=False) for the optional
// per-branch batch rescale, which runs on normalised images.
//
// Resampling follows Pillow / torchvision antialias=True (the released code resizes PIL images):
// a separable filter (triangle for bilinear, Keys cubic a = -0.5 for bicubic) centred at
// (o + 0.5) * scale, widened by the scale when shrinking, with taps limited to the crop box and
// the weights renormalised. Blur is an exact Gaussian of std sigma with edge replication (the
// released code calls PIL's GaussianBlur(radius=sigma), which approximates the same Gaussian).
//
// Parameter record (PARAM_STRIDE f32 per sample; written by data/augment_params.ts):
//   0 crop top, 1 crop left, 2 crop height, 3 crop width (input pixels, integers),
//   4 flip (0/1), 5 jitter applied (0/1), 6 brightness factor, 7 contrast factor,
//   8 saturation factor, 9 hue shift, 10 jitter order (op k at bits 2k..2k+1; 0 brightness,
//   1 contrast, 2 saturation, 3 hue), 11 grayscale (0/1), 12 blur sigma (0 = no blur),
//   13 solarize (0/1), 14-15 unused.
//
// Bindings: 0 uniform Dims; 1 src (array<f32>, read); 2 params (array<f32>, read);
// 3 dst (array<f32>, read_write); 4 packed (array<u32>, read; unpack_bytes only).
//   unpack_bytes:     packed (4 bytes per word, little-endian) -> dst[count]
//   resample_rows:    src [n, in_h, in_w, C] -> dst [n, in_h, out_w, C] (rows outside the crop
//                     are left untouched)
//   resample_cols:    src [n, in_h, out_w, C] -> dst [n, out_h, out_w, C]
//   colour:           dst [n, out_h, out_w, C] in place
//   blur_rows:        src -> dst, both [n, out_h, out_w, C]
//   blur_cols_finish: src -> dst, both [n, out_h, out_w, C]
//   rescale_bilinear: src [n, in_h, in_w, C] -> dst [n, out_h, out_w, C]
// Dispatch: colour runs one workgroup of 256 per image (grid1d(n)); every other entry point runs
// one thread per output pixel (all channels), ceil(pixels / 256) workgroups folded by grid1d;
// the linear workgroup index is wid.y * nwg.x + wid.x.

struct Dims {
  n: u32,
  in_h: u32,
  in_w: u32,
  channels: u32,
  out_h: u32,
  out_w: u32,
  // 0 bilinear, 1 bicubic
  resample_filter: u32,
  // 0: radius ceil(3 sigma); otherwise a fixed radius (torchvision kernel_size = 2 r + 1)
  blur_radius: u32,
  // unpack_bytes: number of bytes
  count: u32,
  solarize_threshold: f32,
  _pad0: u32,
  _pad1: u32,
  channel_mean: vec4<f32>,
  channel_std: vec4<f32>,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<storage, read> packed: array<u32>;

const WG: u32 = 256u;
const PARAM_STRIDE: u32 = 16u;
const P_TOP: u32 = 0u;
const P_LEFT: u32 = 1u;
const P_CROP_H: u32 = 2u;
const P_CROP_W: u32 = 3u;
const P_FLIP: u32 = 4u;
const P_JITTER: u32 = 5u;
const P_BRIGHTNESS: u32 = 6u;
const P_CONTRAST: u32 = 7u;
const P_SATURATION: u32 = 8u;
const P_HUE: u32 = 9u;
const P_ORDER: u32 = 10u;
const P_GRAY: u32 = 11u;
const P_SIGMA: u32 = 12u;
const P_SOLARIZE: u32 = 13u;

const OP_BRIGHTNESS: u32 = 0u;
const OP_CONTRAST: u32 = 1u;
const OP_SATURATION: u32 = 2u;
const OP_HUE: u32 = 3u;

const CUBIC_A: f32 = -0.5;

fn thread_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid;
}

fn param(n: u32, field: u32) -> f32 {
  return params[n * PARAM_STRIDE + field];
}

// ---------------------------------------------------------------------------------------------
// uint8 -> f32

@compute @workgroup_size(256)
fn unpack_bytes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let i = thread_index(wid, nwg, lid);
  if (i >= dims.count) { return; }
  let byte = (packed[i / 4u] >> (8u * (i % 4u))) & 0xffu;
  dst[i] = f32(byte) / 255.0;
}

// ---------------------------------------------------------------------------------------------
// Crop + resize (+ flip)

fn filter_support() -> f32 {
  return select(2.0, 1.0, dims.resample_filter == 0u);
}

fn filter_weight(x: f32) -> f32 {
  let a = abs(x);
  if (dims.resample_filter == 0u) {
    return max(0.0, 1.0 - a);
  }
  if (a < 1.0) {
    return ((CUBIC_A + 2.0) * a - (CUBIC_A + 3.0)) * a * a + 1.0;
  }
  if (a < 2.0) {
    return (((a - 5.0) * a + 8.0) * a - 4.0) * CUBIC_A;
  }
  return 0.0;
}

// Taps of output coordinate `o` when `in_size` crop pixels map to `out_size`: the first tap
// (relative to the crop start), one past the last, the centre and the filter's stretch.
struct Taps {
  first: i32,
  end: i32,
  center: f32,
  inv_stretch: f32,
}

fn taps_for(o: u32, in_size: u32, out_size: u32) -> Taps {
  let scale = f32(in_size) / f32(out_size);
  let stretch = max(scale, 1.0);
  let support = filter_support() * stretch;
  let center = (f32(o) + 0.5) * scale;
  let first = max(i32(floor(center - support + 0.5)), 0);
  let end = min(i32(floor(center + support + 0.5)), i32(in_size));
  return Taps(first, end, center, 1.0 / stretch);
}

@compute @workgroup_size(256)
fn resample_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let t = thread_index(wid, nwg, lid);
  let out_w = dims.out_w;
  if (t >= dims.n * dims.in_h * out_w) { return; }
  let x = t % out_w;
  let y = (t / out_w) % dims.in_h;
  let n = t / (out_w * dims.in_h);
  let top = u32(param(n, P_TOP));
  let crop_h = u32(param(n, P_CROP_H));
  if (y < top || y >= top + crop_h) { return; }
  let left = u32(param(n, P_LEFT));
  let crop_w = u32(param(n, P_CROP_W));
  // A flipped view reads its columns mirrored.
  let xs = select(x, out_w - 1u - x, param(n, P_FLIP) > 0.5);
  let taps = taps_for(xs, crop_w, out_w);
  let c_count = dims.channels;
  var acc = vec4<f32>(0.0);
  var weight_sum = 0.0;
  let row = (n * dims.in_h + y) * dims.in_w + left;
  for (var k = taps.first; k < taps.end; k++) {
    let w = filter_weight((f32(k) - taps.center + 0.5) * taps.inv_stretch);
    weight_sum += w;
    let s = (row + u32(k)) * c_count;
    for (var c = 0u; c < c_count; c++) {
      acc[c] += w * src[s + c];
    }
  }
  let norm = select(1.0, 1.0 / weight_sum, weight_sum != 0.0);
  let o = ((n * dims.in_h + y) * out_w + x) * c_count;
  for (var c = 0u; c < c_count; c++) {
    dst[o + c] = clamp(acc[c] * norm, 0.0, 1.0);
  }
}

@compute @workgroup_size(256)
fn resample_cols(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let t = thread_index(wid, nwg, lid);
  let out_w = dims.out_w;
  let out_h = dims.out_h;
  if (t >= dims.n * out_h * out_w) { return; }
  let x = t % out_w;
  let y = (t / out_w) % out_h;
  let n = t / (out_w * out_h);
  let top = u32(param(n, P_TOP));
  let crop_h = u32(param(n, P_CROP_H));
  let taps = taps_for(y, crop_h, out_h);
  let c_count = dims.channels;
  var acc = vec4<f32>(0.0);
  var weight_sum = 0.0;
  for (var k = taps.first; k < taps.end; k++) {
    let w = filter_weight((f32(k) - taps.center + 0.5) * taps.inv_stretch);
    weight_sum += w;
    let s = ((n * dims.in_h + top + u32(k)) * out_w + x) * c_count;
    for (var c = 0u; c < c_count; c++) {
      acc[c] += w * src[s + c];
    }
  }
  let norm = select(1.0, 1.0 / weight_sum, weight_sum != 0.0);
  let o = ((n * out_h + y) * out_w + x) * c_count;
  for (var c = 0u; c < c_count; c++) {
    dst[o + c] = clamp(acc[c] * norm, 0.0, 1.0);
  }
}

// ---------------------------------------------------------------------------------------------
// Colour jitter and grayscale (torchvision's tensor definitions)

fn luma(v: vec3<f32>) -> f32 {
  return 0.2989 * v.x + 0.587 * v.y + 0.114 * v.z;
}

fn rgb_to_hsv(v: vec3<f32>) -> vec3<f32> {
  let maxc = max(v.x, max(v.y, v.z));
  let minc = min(v.x, min(v.y, v.z));
  let equal = maxc == minc;
  let cr = maxc - minc;
  let s = cr / select(maxc, 1.0, equal);
  let cr_divisor = select(cr, 1.0, equal);
  let rc = (maxc - v.x) / cr_divisor;
  let gc = (maxc - v.y) / cr_divisor;
  let bc = (maxc - v.z) / cr_divisor;
  var h = 0.0;
  if (maxc == v.x) {
    h = bc - gc;
  } else if (maxc == v.y) {
    h = 2.0 + rc - bc;
  } else {
    h = 4.0 + gc - rc;
  }
  h = fract(h / 6.0 + 1.0);
  return vec3<f32>(h, s, maxc);
}

fn hsv_to_rgb(hsv: vec3<f32>) -> vec3<f32> {
  let h = hsv.x;
  let s = hsv.y;
  let v = hsv.z;
  let i_float = floor(h * 6.0);
  let f = h * 6.0 - i_float;
  let i = ((i32(i_float) % 6) + 6) % 6;
  let p = clamp(v * (1.0 - s), 0.0, 1.0);
  let q = clamp(v * (1.0 - s * f), 0.0, 1.0);
  let t = clamp(v * (1.0 - s * (1.0 - f)), 0.0, 1.0);
  switch (i) {
    case 0: { return vec3<f32>(v, t, p); }
    case 1: { return vec3<f32>(q, v, p); }
    case 2: { return vec3<f32>(p, v, t); }
    case 3: { return vec3<f32>(p, q, v); }
    case 4: { return vec3<f32>(t, p, v); }
    default: { return vec3<f32>(v, p, q); }
  }
}

fn adjust_hue(v: vec3<f32>, shift: f32) -> vec3<f32> {
  var hsv = rgb_to_hsv(v);
  // torch's (h + shift) % 1.0 (floored modulo).
  let h = hsv.x + shift;
  hsv.x = h - floor(h);
  return hsv_to_rgb(hsv);
}

// Apply jitter ops at order positions [first_op, end_op) to one pixel (RGB in .xyz; grey data in .x).
fn apply_jitter(v_in: vec3<f32>, n: u32, first_op: u32, end_op: u32, contrast_mean: f32) -> vec3<f32> {
  let order = u32(param(n, P_ORDER));
  let colour = dims.channels == 3u;
  var v = v_in;
  for (var k = first_op; k < end_op; k++) {
    let op = (order >> (2u * k)) & 3u;
    if (op == OP_BRIGHTNESS) {
      v = clamp(v * param(n, P_BRIGHTNESS), vec3<f32>(0.0), vec3<f32>(1.0));
    } else if (op == OP_CONTRAST) {
      let f = param(n, P_CONTRAST);
      v = clamp(f * v + (1.0 - f) * contrast_mean, vec3<f32>(0.0), vec3<f32>(1.0));
    } else if (op == OP_SATURATION) {
      if (colour) {
        let f = param(n, P_SATURATION);
        v = clamp(f * v + (1.0 - f) * luma(v), vec3<f32>(0.0), vec3<f32>(1.0));
      }
    } else {
      let shift = param(n, P_HUE);
      if (colour && shift != 0.0) {
        v = adjust_hue(v, shift);
      }
    }
  }
  return v;
}

fn load_pixel(p: u32) -> vec3<f32> {
  if (dims.channels == 3u) {
    return vec3<f32>(dst[3u * p], dst[3u * p + 1u], dst[3u * p + 2u]);
  }
  return vec3<f32>(dst[p], 0.0, 0.0);
}

fn store_pixel(p: u32, v: vec3<f32>) {
  if (dims.channels == 3u) {
    dst[3u * p] = v.x;
    dst[3u * p + 1u] = v.y;
    dst[3u * p + 2u] = v.z;
  } else {
    dst[p] = v.x;
  }
}

fn grey_of(v: vec3<f32>) -> f32 {
  return select(v.x, luma(v), dims.channels == 3u);
}

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn colour(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let n = wid.y * nwg.x + wid.x;
  if (n >= dims.n) { return; }
  let pixels = dims.out_h * dims.out_w;
  let image = n * pixels;
  let jitter = param(n, P_JITTER) > 0.5;
  let grey = param(n, P_GRAY) > 0.5 && dims.channels == 3u;
  let order = u32(param(n, P_ORDER));
  var contrast_at = 0u;
  for (var k = 0u; k < 4u; k++) {
    if (((order >> (2u * k)) & 3u) == OP_CONTRAST) { contrast_at = k; }
  }
  // Contrast blends with the mean grey level of the image as it is when contrast runs, so sum
  // the grey of every pixel after the ops before it; fixed-order tree reduction (deterministic).
  var sum = 0.0;
  for (var p = lid; p < pixels; p += WG) {
    sum += grey_of(apply_jitter(load_pixel(image + p), n, 0u, contrast_at, 0.0));
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let contrast_mean = partial[0] / f32(pixels);
  if (!jitter && !grey) { return; }
  for (var p = lid; p < pixels; p += WG) {
    var v = load_pixel(image + p);
    if (jitter) { v = apply_jitter(v, n, 0u, 4u, contrast_mean); }
    if (grey) { v = vec3<f32>(luma(v)); }
    store_pixel(image + p, v);
  }
}

// ---------------------------------------------------------------------------------------------
// Gaussian blur, solarize, normalise

fn blur_radius(sigma: f32) -> i32 {
  if (dims.blur_radius > 0u) { return i32(dims.blur_radius); }
  return i32(ceil(3.0 * sigma));
}

@compute @workgroup_size(256)
fn blur_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let t = thread_index(wid, nwg, lid);
  let out_w = dims.out_w;
  let out_h = dims.out_h;
  if (t >= dims.n * out_h * out_w) { return; }
  let x = i32(t % out_w);
  let row = t / out_w;
  let n = row / out_h;
  let c_count = dims.channels;
  let sigma = param(n, P_SIGMA);
  let o = t * c_count;
  if (sigma <= 0.0) {
    for (var c = 0u; c < c_count; c++) { dst[o + c] = src[o + c]; }
    return;
  }
  let radius = blur_radius(sigma);
  let inv_two_var = 1.0 / (2.0 * sigma * sigma);
  var acc = vec4<f32>(0.0);
  var weight_sum = 0.0;
  for (var k = -radius; k <= radius; k++) {
    let w = exp(-f32(k * k) * inv_two_var);
    weight_sum += w;
    let xs = u32(clamp(x + k, 0, i32(out_w) - 1));
    let s = (row * out_w + xs) * c_count;
    for (var c = 0u; c < c_count; c++) { acc[c] += w * src[s + c]; }
  }
  for (var c = 0u; c < c_count; c++) { dst[o + c] = acc[c] / weight_sum; }
}

@compute @workgroup_size(256)
fn blur_cols_finish(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let t = thread_index(wid, nwg, lid);
  let out_w = dims.out_w;
  let out_h = dims.out_h;
  if (t >= dims.n * out_h * out_w) { return; }
  let x = t % out_w;
  let y = i32((t / out_w) % out_h);
  let n = t / (out_w * out_h);
  let c_count = dims.channels;
  let sigma = param(n, P_SIGMA);
  var v = vec4<f32>(0.0);
  if (sigma <= 0.0) {
    for (var c = 0u; c < c_count; c++) { v[c] = src[t * c_count + c]; }
  } else {
    let radius = blur_radius(sigma);
    let inv_two_var = 1.0 / (2.0 * sigma * sigma);
    var weight_sum = 0.0;
    for (var k = -radius; k <= radius; k++) {
      let w = exp(-f32(k * k) * inv_two_var);
      weight_sum += w;
      let ys = u32(clamp(y + k, 0, i32(out_h) - 1));
      let s = ((n * out_h + ys) * out_w + x) * c_count;
      for (var c = 0u; c < c_count; c++) { v[c] += w * src[s + c]; }
    }
    v = v / weight_sum;
  }
  let solarize = param(n, P_SOLARIZE) > 0.5;
  for (var c = 0u; c < c_count; c++) {
    var value = v[c];
    if (solarize && value >= dims.solarize_threshold) { value = 1.0 - value; }
    dst[t * c_count + c] = (value - dims.channel_mean[c]) / dims.channel_std[c];
  }
}

// ---------------------------------------------------------------------------------------------
// Batch rescale (torch F.interpolate, mode="bilinear", align_corners=False, no antialias)

fn source_index(o: u32, in_size: u32, out_size: u32) -> vec3<f32> {
  let scale = f32(in_size) / f32(out_size);
  let s = max(scale * (f32(o) + 0.5) - 0.5, 0.0);
  let i0 = min(u32(s), in_size - 1u);
  let i1 = min(i0 + 1u, in_size - 1u);
  let lambda = s - f32(i0);
  return vec3<f32>(f32(i0), f32(i1), lambda);
}

@compute @workgroup_size(256)
fn rescale_bilinear(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let t = thread_index(wid, nwg, lid);
  let out_w = dims.out_w;
  let out_h = dims.out_h;
  if (t >= dims.n * out_h * out_w) { return; }
  let x = t % out_w;
  let y = (t / out_w) % out_h;
  let n = t / (out_w * out_h);
  let sy = source_index(y, dims.in_h, out_h);
  let sx = source_index(x, dims.in_w, out_w);
  let c_count = dims.channels;
  let base = n * dims.in_h;
  let r0 = (base + u32(sy.x)) * dims.in_w;
  let r1 = (base + u32(sy.y)) * dims.in_w;
  let x0 = u32(sx.x);
  let x1 = u32(sx.y);
  for (var c = 0u; c < c_count; c++) {
    let top = (1.0 - sx.z) * src[(r0 + x0) * c_count + c] + sx.z * src[(r0 + x1) * c_count + c];
    let bottom = (1.0 - sx.z) * src[(r1 + x0) * c_count + c] + sx.z * src[(r1 + x1) * c_count + c];
    dst[t * c_count + c] = (1.0 - sy.z) * top + sy.z * bottom;
  }
}
