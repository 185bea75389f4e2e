// Pooling on NHWC activations: max pool (default 3x3, stride 2, padding 1, as in a ResNet stem)
// forward and backward, and global average pool ([N, H, W, C] -> [N, C]) forward and backward.
//
// Max pool forward scans each window in (kh, kw) order and keeps the first maximum (ties go to
// the first index, like PyTorch; a NaN wins), saving its flat spatial index ih * W + iw. The
// backward is a gather: each input pixel sums, in a fixed (oh, ow) order, the gradients of the
// windows whose saved argmax is that pixel, so there are no atomics and no races.
//
// Bindings (an entry point binds only what it uses):
//   0 uniform Params
//   1 input (read): x [N, H, W, C] (forwards), or dy [N, OH, OW, C] / [N, C] (backwards)
//   2 argmax [N, OH, OW, C] (read_write u32): written by maxpool_forward, read by maxpool_backward
//   3 output (read_write): y [N, OH, OW, C] / [N, C] (forwards), or dx [N, H, W, C] (backwards)
// Dispatch: one thread per output element, ceil(total / 256) workgroups folded into x-y by grid1d
// (linear workgroup index wid.y * nwg.x + wid.x). total = the output's element count.

struct Params {
  batch: u32,
  height: u32,
  width: u32,
  channels: u32,
  out_height: u32,
  out_width: u32,
  kernel_size: u32,
  stride: u32,
  padding: u32,
  total: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;

const WG: u32 = 256u;

fn thread_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid;
}

@compute @workgroup_size(256)
fn maxpool_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  let i = thread_index(wid, nwg, lid);
  if (i >= params.total) { return; }
  let c = i % params.channels;
  let pixel = i / params.channels;
  let ow = pixel % params.out_width;
  let oh = (pixel / params.out_width) % params.out_height;
  let n = pixel / (params.out_width * params.out_height);
  // Window bounds in signed arithmetic: padding makes the first rows/columns negative.
  let h0 = i32(oh * params.stride) - i32(params.padding);
  let w0 = i32(ow * params.stride) - i32(params.padding);
  let h_start = u32(max(h0, 0));
  let w_start = u32(max(w0, 0));
  let h_stop = u32(min(h0 + i32(params.kernel_size), i32(params.height)));
  let w_stop = u32(min(w0 + i32(params.kernel_size), i32(params.width)));
  let image = n * params.height * params.width;
  // Start from the window's first in-bounds pixel (every window has one), like PyTorch's -inf.
  var best_index = h_start * params.width + w_start;
  var best = input[(image + best_index) * params.channels + c];
  for (var ih = h_start; ih < h_stop; ih++) {
    for (var iw = w_start; iw < w_stop; iw++) {
      let spatial = ih * params.width + iw;
      let v = input[(image + spatial) * params.channels + c];
      if (v > best || v != v) {
        best = v;
        best_index = spatial;
      }
    }
  }
  output[i] = best;
  argmax[i] = best_index;
}

@compute @workgroup_size(256)
fn maxpool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let i = thread_index(wid, nwg, lid);
  if (i >= params.total) { return; }
  let c = i % params.channels;
  let pixel = i / params.channels;
  let iw = pixel % params.width;
  let ih = (pixel / params.width) % params.height;
  let n = pixel / (params.width * params.height);
  let spatial = ih * params.width + iw;
  // Windows covering ih: oh * stride - padding <= ih <= oh * stride - padding + kernel - 1.
  let k = i32(params.kernel_size);
  let s = i32(params.stride);
  let p = i32(params.padding);
  let oh_first = max((i32(ih) + p - k + s) / s, 0); // ceil((ih + p - k + 1) / s), clamped at 0
  let ow_first = max((i32(iw) + p - k + s) / s, 0);
  let oh_last = min((i32(ih) + p) / s, i32(params.out_height) - 1);
  let ow_last = min((i32(iw) + p) / s, i32(params.out_width) - 1);
  var grad = 0.0;
  for (var oh = oh_first; oh <= oh_last; oh++) {
    for (var ow = ow_first; ow <= ow_last; ow++) {
      let o = ((n * params.out_height + u32(oh)) * params.out_width + u32(ow)) * params.channels + c;
      if (argmax[o] == spatial) { grad += input[o]; }
    }
  }
  output[i] = grad;
}

// y[n, c] = mean over (h, w) of x[n, h, w, c], summed in order h, w.
@compute @workgroup_size(256)
fn avgpool_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  let i = thread_index(wid, nwg, lid);
  if (i >= params.total) { return; }
  let c = i % params.channels;
  let n = i / params.channels;
  let pixels = params.height * params.width;
  var sum = 0.0;
  for (var q = 0u; q < pixels; q++) {
    sum += input[(n * pixels + q) * params.channels + c];
  }
  output[i] = sum / f32(pixels);
}

// dx[n, h, w, c] = dy[n, c] / (H * W).
@compute @workgroup_size(256)
fn avgpool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let i = thread_index(wid, nwg, lid);
  if (i >= params.total) { return; }
  let c = i % params.channels;
  let pixels = params.height * params.width;
  let n = i / (pixels * params.channels);
  output[i] = input[n * params.channels + c] / f32(pixels);
}
