// The elementwise halves of batch norm (normalize, input_grad; see batchnorm.wgsl for the maths
// and the statistics passes) and the partial pass of the backward's column sums (grad_partial)
// on vec4s, for channel counts divisible by 4 (every ResNet layer).
// On a CPU adapter each per-lane load is a loop over lanes, so one vec4 load of 4 channels costs
// about as much as one scalar load: this variant does a quarter of the loads.
// Bindings: the same numbers as batchnorm.wgsl (0 Params, 1 x, 2 gamma, 3 beta, 4 mean,
// 5 inv_std, 9 y, 10 dy, 11 relu_out, 12 grad_sums [2, C], 15 dx, 16 residual), viewed as vec4
// arrays.
// Dispatch: ceil(rows * C / 4096) workgroups of 256 folded into x-y (grid1d); each thread handles
// 4 vec4s 256 apart. grad_partial: (ceil(C / 4 / TILE_C4), num_blocks) workgroups, each summing
// TILE_C4 vec4 columns over one block of rows in LANES = 256 / TILE_C4 lanes and a fixed tree,
// writing partials [num_blocks, 2, C] (binding 8) as batchnorm.wgsl's grad_partial does, so its
// grad_final merges them.

override RELU: bool = false;
override FROM_VARIANCE: bool = false;
override TILE_C4: u32 = 16u;  // grad_partial: vec4 columns per workgroup, a power of two 1..64
override RESIDUAL: bool = false;

struct Params {
  rows: u32,
  channels: u32,
  rows_per_block: u32,
  num_blocks: u32,
  total: u32,
  eps: f32,
  momentum: f32,
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

@compute @workgroup_size(256)
fn normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let total4 = params.total / 4u;
  let channels4 = params.channels / 4u;
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < total4) {
      let c = i % channels4;
      let stat = inv_std[c];
      let scale = select(stat, 1.0 / sqrt(stat + vec4<f32>(params.eps)), FROM_VARIANCE);
      var v = (x[i] - mean[c]) * scale * gamma[c] + beta[c];
      if (RESIDUAL) { v = v + residual[i]; }
      if (RELU) { v = max(v, vec4<f32>(0.0)); }
      y[i] = v;
    }
  }
}

@compute @workgroup_size(256)
fn input_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let total4 = params.total / 4u;
  let channels4 = params.channels / 4u;
  let inv_rows = 1.0 / f32(params.rows);
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < total4) {
      let c = i % channels4;
      let s = inv_std[c];
      let xhat = (x[i] - mean[c]) * s;
      let mean_dy = grad_sums[c] * inv_rows;
      let mean_dy_xhat = grad_sums[channels4 + c] * inv_rows;
      var g = dy[i];
      if (RELU) { g = select(vec4<f32>(0.0), g, relu_out[i] > vec4<f32>(0.0)); }
      dx[i] = gamma[c] * s * (g - mean_dy - xhat * mean_dy_xhat);
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
  var sum_dy = vec4<f32>(0.0);
  var sum_dy_xhat = vec4<f32>(0.0);
  if (c < channels4) {
    let mu = mean[c];
    let s = inv_std[c];
    for (var r = row_start + lane; r < row_stop; r += lanes) {
      let i = r * channels4 + c;
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
    let base = wid.y * 2u * channels4 + c;
    partials[base] = shared_dy[col];
    partials[base + channels4] = shared_dy_xhat[col];
  }
}
