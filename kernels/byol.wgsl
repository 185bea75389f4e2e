// BYOL's loss on unit vectors: loss = mean_i (2 - 2 p_hat_i . z_hat_i) = mean_i |p_hat_i - z_hat_i|^2,
// forward and backward (gradient to p_hat only; z_hat is the stopped target).
// forward (one workgroup of 256 per row, fixed tree order): row_loss[i] = (2 - 2 p_hat_i . z_hat_i) / n.
// backward (one thread per element): dp_hat = -(2 / n) z_hat.
// Bindings: 0 uniform Params; 1 p_hat (read, f32 [n, d]); 2 z_hat (read, f32 [n, d]); 3 row_loss
// (read_write, f32 [n], forward); 4 dp_hat (read_write, f32 [n, d], backward).
// Dispatch: forward n workgroups, backward ceil(n * d / 256), both folded into x-y (grid1d).

struct Params {
  n: u32,
  dim: u32,
  inv_n: f32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> p_hat: array<f32>;
@group(0) @binding(2) var<storage, read> z_hat: array<f32>;
@group(0) @binding(3) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> dp_hat: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let i = wid.y * nwg.x + wid.x;
  if (i >= params.n) { return; }
  let base = i * params.dim;
  var acc = 0.0;
  for (var c = lid; c < params.dim; c += WG) {
    acc += p_hat[base + c] * z_hat[base + c];
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u) { row_loss[i] = (2.0 - 2.0 * partial[0]) * params.inv_n; }
}

@compute @workgroup_size(256)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let element = gid.y * nwg.x * WG + gid.x;
  if (element >= params.n * params.dim) { return; }
  dp_hat[element] = -2.0 * params.inv_n * z_hat[element];
}
