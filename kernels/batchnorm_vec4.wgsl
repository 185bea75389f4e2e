// The elementwise halves of batch norm (normalize, input_grad; see batchnorm.wgsl for the maths)
// and the partial passes of the forward's statistics (stats_partial) and of the backward's column
// sums (grad_partial) on vec4s, for channel counts divisible by 4 (every ResNet layer).
// On a CPU adapter each per-lane load is a loop over lanes, so one vec4 load of 4 channels costs
// about as much as one scalar load: this variant does a quarter of the loads.
// Bindings: the same numbers as batchnorm.wgsl (0 Params, 1 x, 2 gamma, 3 beta, 4 mean,
// 5 inv_std, 9 y, 10 dy, 11 relu_out, 12 grad_sums [views, 2, C], 15 dx, 16 residual), viewed as
// vec4 arrays.
// Dispatch: ceil(rows * C / 4096) workgroups of 256 folded into x-y (grid1d); each thread handles
// 4 vec4s 256 apart. stats_partial and grad_partial: (ceil(C / 4 / TILE_C4), num_blocks)
// workgroups, each reducing TILE_C4 vec4 columns over one block of rows in LANES = 256 / TILE_C4
// lanes and a fixed tree, writing partials [num_blocks, 3 or 2, C] (binding 8) as batchnorm.wgsl's
// partial passes do, so its stats_final / grad_final merge them.
// Stacked views: grid z is the view. params.rows / total are one view's; view v's rows follow
// view v - 1's in x, y, dy, dx, its statistics are row v of mean / inv_std [views, C], its
// partials follow view v - 1's num_blocks, and its grad_sums are [views, 2, C] row v. One
// dispatch for all views instead of one per view: on a CPU adapter each dispatch leaves the
// cores idle for ~0.1 ms (measured) whatever it does.

override RELU: bool = false;
override FROM_VARIANCE: bool = false;
override TILE_C4: u32 = 16u;  // partial passes: vec4 columns per workgroup, a power of two 1..64
override RESIDUAL: bool = false;
override SAME_CHANNEL: bool = false; // normalize/input_grad: WG % (C / 4) == 0 (see below)

struct Params {
  rows: u32,
  channels: u32,
  rows_per_block: u32,
  num_blocks: u32,
  total: u32,
  eps: f32,
  momentum: f32,
  // Index of this call's first statistic in mean / inv_std: the view's when several views' rows
  // were normalised apart (stats_final writes groups x C of them).
  stat_offset: u32,
  groups: u32,        // stats_final, grad_final: views, each num_blocks partials, merged in order
  block_offset: u32,  // batchnorm.wgsl's scalar stats_partial only (here the view is grid z)
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> gamma: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> beta: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> mean: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> inv_std: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> partials: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> dy: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read> relu_out: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read> grad_sums: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read_write> dx: array<vec4<f32>>;
@group(0) @binding(16) var<storage, read> residual: array<vec4<f32>>;

const WG: u32 = 256u;
const PER_THREAD: u32 = 4u;

fn first_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG * PER_THREAD + lid;
}

// With SAME_CHANNEL every element a thread touches has its first element's channel (WG is a
// multiple of C / 4), so the per-channel loads and the modulo happen once per thread: on a CPU
// adapter each load is a per-lane loop, and hoisting them made these passes 1.4-1.9x faster.

// y = x * scale + shift with scale = inv_std * gamma, shift = beta - mean * scale.
struct Affine {
  scale: vec4<f32>,
  shift: vec4<f32>,
}

fn affine(c: u32, view: u32) -> Affine {
  let at = params.stat_offset / 4u + view * (params.channels / 4u) + c;
  let stat = inv_std[at];
  let inv = select(stat, 1.0 / sqrt(stat + vec4<f32>(params.eps)), FROM_VARIANCE);
  let scale = inv * gamma[c];
  return Affine(scale, beta[c] - mean[at] * scale);
}

@compute @workgroup_size(256)
fn normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let total4 = params.total / 4u;
  let channels4 = params.channels / 4u;
  let base = first_index(wid, nwg, lid);
  let view_start = wid.z * total4;
  var a = affine(base % channels4, wid.z);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < total4) {
      if (!SAME_CHANNEL) { a = affine(i % channels4, wid.z); }
      let at = view_start + i;
      var v = x[at] * a.scale + a.shift;
      if (RESIDUAL) { v = v + residual[at]; }
      if (RELU) { v = max(v, vec4<f32>(0.0)); }
      y[at] = v;
    }
  }
}

// dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)): the per-channel factors.
struct InputGradTerms {
  mean: vec4<f32>,
  inv_std: vec4<f32>,
  scale: vec4<f32>,
  mean_dy: vec4<f32>,
  mean_dy_xhat: vec4<f32>,
}

fn input_grad_terms(c: u32, view: u32, channels4: u32, inv_rows: f32) -> InputGradTerms {
  let at = params.stat_offset / 4u + view * channels4 + c;
  let s = inv_std[at];
  let sums = view * 2u * channels4 + c;
  return InputGradTerms(mean[at], s, gamma[c] * s, grad_sums[sums] * inv_rows,
                        grad_sums[sums + channels4] * inv_rows);
}

@compute @workgroup_size(256)
fn input_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let total4 = params.total / 4u;
  let channels4 = params.channels / 4u;
  let inv_rows = 1.0 / f32(params.rows);
  let base = first_index(wid, nwg, lid);
  let view_start = wid.z * total4;
  var t = input_grad_terms(base % channels4, wid.z, channels4, inv_rows);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < total4) {
      if (!SAME_CHANNEL) { t = input_grad_terms(i % channels4, wid.z, channels4, inv_rows); }
      let at = view_start + i;
      let xhat = (x[at] - t.mean) * t.inv_std;
      var g = dy[at];
      if (RELU) { g = select(vec4<f32>(0.0), g, relu_out[at] > vec4<f32>(0.0)); }
      dx[at] = t.scale * (g - t.mean_dy - xhat * t.mean_dy_xhat);
    }
  }
}

var<workgroup> shared_dy: array<vec4<f32>, WG>;
var<workgroup> shared_dy_xhat: array<vec4<f32>, WG>;

@compute @workgroup_size(256)
fn grad_partial(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let lanes = WG / TILE_C4;
  let col = lid % TILE_C4;
  let lane = lid / TILE_C4;
  let channels4 = params.channels / 4u;
  let c = wid.x * TILE_C4 + col;
  let row_start = wid.y * params.rows_per_block;
  let row_stop = min(row_start + params.rows_per_block, params.rows);
  let view_start = wid.z * params.rows * channels4;
  var sum_dy = vec4<f32>(0.0);
  var sum_dy_xhat = vec4<f32>(0.0);
  if (c < channels4) {
    let at = params.stat_offset / 4u + wid.z * channels4 + c;
    let mu = mean[at];
    let s = inv_std[at];
    for (var r = row_start + lane; r < row_stop; r += lanes) {
      let i = view_start + r * channels4 + c;
      var g = dy[i];
      if (RELU) { g = select(vec4<f32>(0.0), g, relu_out[i] > vec4<f32>(0.0)); }
      sum_dy += g;
      sum_dy_xhat += g * ((x[i] - mu) * s);
    }
  }
  shared_dy[lid] = sum_dy;
  shared_dy_xhat[lid] = sum_dy_xhat;
  workgroupBarrier();
  for (var stride = lanes / 2u; stride > 0u; stride >>= 1u) {
    if (lane < stride) {
      let j = lid + stride * TILE_C4;
      shared_dy[lid] += shared_dy[j];
      shared_dy_xhat[lid] += shared_dy_xhat[j];
    }
    workgroupBarrier();
  }
  if (lane == 0u && c < channels4) {
    let base = (wid.z * params.num_blocks + wid.y) * 2u * channels4 + c;
    partials[base] = shared_dy[col];
    partials[base + channels4] = shared_dy_xhat[col];
  }
}

// Statistics partial pass on vec4 columns (the layout of grad_partial): each thread sums its n
// rows' deviations d from its first value, turns them into (count, mean, centred sum of squares
// m2 = sum d^2 - (sum d)^2 / n), and the lanes merge with Chan's formula in a fixed tree. The
// shift is one of the thread's own values, so sum d^2 <= (n + 1) m2 and the subtraction loses at
// most a factor n + 1 of relative precision (no E[x^2] - E[x]^2 collapse for a large mean), with
// no per-row division. Writes partials [num_blocks, 3, C] as batchnorm.wgsl's stats_partial does,
// for its stats_final.
var<workgroup> shared_n: array<f32, WG>;
var<workgroup> shared_mean: array<vec4<f32>, WG>;
var<workgroup> shared_m2: array<vec4<f32>, WG>;

struct Moments4 {
  n: f32,
  mean: vec4<f32>,
  m2: vec4<f32>,
}

fn merge4(a: Moments4, b: Moments4) -> Moments4 {
  if (b.n == 0.0) { return a; }
  if (a.n == 0.0) { return b; }
  let n = a.n + b.n;
  let delta = b.mean - a.mean;
  let fraction_b = b.n / n;
  return Moments4(n, a.mean + delta * fraction_b, a.m2 + b.m2 + delta * delta * (a.n * fraction_b));
}

@compute @workgroup_size(256)
fn stats_partial(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let lanes = WG / TILE_C4;
  let col = lid % TILE_C4;
  let lane = lid / TILE_C4;
  let channels4 = params.channels / 4u;
  let c = wid.x * TILE_C4 + col;
  let row_start = wid.y * params.rows_per_block;
  let row_stop = min(row_start + params.rows_per_block, params.rows);
  let view_start = wid.z * params.rows * channels4;
  var acc = Moments4(0.0, vec4<f32>(0.0), vec4<f32>(0.0));
  let first = row_start + lane;
  if (c < channels4 && first < row_stop) {
    let shift = x[view_start + first * channels4 + c];
    var n = 0.0;
    var sum = vec4<f32>(0.0);
    var sum_sq = vec4<f32>(0.0);
    for (var r = first; r < row_stop; r += lanes) {
      let d = x[view_start + r * channels4 + c] - shift;
      sum += d;
      sum_sq += d * d;
      n += 1.0;
    }
    let mean_d = sum / n;
    acc = Moments4(n, shift + mean_d, max(sum_sq - sum * mean_d, vec4<f32>(0.0)));
  }
  shared_n[lid] = acc.n;
  shared_mean[lid] = acc.mean;
  shared_m2[lid] = acc.m2;
  workgroupBarrier();
  for (var stride = lanes / 2u; stride > 0u; stride >>= 1u) {
    if (lane < stride) {
      let j = lid + stride * TILE_C4;
      let m = merge4(Moments4(shared_n[lid], shared_mean[lid], shared_m2[lid]),
                     Moments4(shared_n[j], shared_mean[j], shared_m2[j]));
      shared_n[lid] = m.n;
      shared_mean[lid] = m.mean;
      shared_m2[lid] = m.m2;
    }
    workgroupBarrier();
  }
  if (lane == 0u && c < channels4) {
    let base = (wid.z * params.num_blocks + wid.y) * 3u * channels4 + c;
    partials[base] = vec4<f32>(shared_n[col]);
    partials[base + channels4] = shared_mean[col];
    partials[base + 2u * channels4] = shared_m2[col];
  }
}
