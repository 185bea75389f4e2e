// Row-wise L2 normalisation of a [rows, cols] matrix, forward and backward.
//   forward:  norms[r] = |x_r|, y_r = x_r / max(|x_r|, EPS)
//   backward: dx_r = (dy_r - y_r (y_r . dy_r)) / max(norms[r], EPS)
// (the Jacobian (I - y y^T) / max(|x|, EPS) of x / |x| applied to dy, as METHOD.md writes it).
// Row sums use a fixed tree order (no atomics), so results are bit-reproducible.
//
// Bindings: 0 uniform Params; 1 a (read: x in forward, y in backward); 2 b (read: dy, backward
// only); 3 norms (read_write: written by forward, read by backward); 4 out (read_write: y in
// forward, dx in backward). The stacked side of a call (out in forward; a, b and norms in
// backward) is offset by `row_offset` rows, so two matrices can share one [2n, cols] buffer.
// Dispatch: one workgroup of 256 threads per row, folded into x-y (grid1d); the row is
// wid.y * nwg.x + wid.x.

struct Params {
  rows: u32,
  cols: u32,
  row_offset: u32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> norms: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;
const EPS: f32 = 1e-12;
var<workgroup> partial: array<f32, WG>;

// Sum of `partial` over the workgroup in a fixed tree order; every thread gets the total.
fn workgroup_sum(lid: u32, value: f32) -> f32 {
  partial[lid] = value;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  // Uniform control flow: the whole workgroup leaves together.
  if (row >= params.rows) { return; }
  let cols = params.cols;
  let src = row * cols;
  var acc = 0.0;
  for (var c = lid; c < cols; c += WG) {
    let v = a[src + c];
    acc += v * v;
  }
  let norm = sqrt(workgroup_sum(lid, acc));
  let inv = 1.0 / max(norm, EPS);
  let dst_row = row + params.row_offset;
  let dst = dst_row * cols;
  for (var c = lid; c < cols; c += WG) {
    out[dst + c] = a[src + c] * inv;
  }
  if (lid == 0u) { norms[dst_row] = norm; }
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= params.rows) { return; }
  let cols = params.cols;
  let src_row = row + params.row_offset;
  let src = src_row * cols;
  var acc = 0.0;
  for (var c = lid; c < cols; c += WG) {
    acc += a[src + c] * b[src + c];
  }
  let y_dot_dy = workgroup_sum(lid, acc);
  let inv = 1.0 / max(norms[src_row], EPS);
  let dst = row * cols;
  for (var c = lid; c < cols; c += WG) {
    out[dst + c] = (b[src + c] - a[src + c] * y_dot_dy) * inv;
  }
}
