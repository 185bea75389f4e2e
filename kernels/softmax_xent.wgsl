// Softmax cross-entropy for classification (the linear probe), forward and backward in one pass.
// For each row r of logits [rows, classes] with integer label y_r:
//   loss[r] = logsumexp(logits[r]) - logits[r, y_r]
//   dlogits[r, c] = (softmax(logits[r])_c - [c == y_r]) * grad_scale   (grad_scale = 1/rows
//   for a mean loss)
// Bindings: 0 uniform {rows, classes, grad_scale}; 1 logits; 2 labels (u32); 3 loss (rows);
// 4 dlogits (rows x classes). Dispatch: one workgroup of 64 threads per row, folded by grid1d.

struct Params {
  rows: u32,
  classes: u32,
  grad_scale: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;

const WG: u32 = 64u;
var<workgroup> scratch: array<f32, WG>;

fn reduce_max(lid: u32, v: f32) -> f32 {
  scratch[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { scratch[lid] = max(scratch[lid], scratch[lid + s]); }
    workgroupBarrier();
  }
  let r = scratch[0];
  workgroupBarrier();
  return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
  scratch[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { scratch[lid] += scratch[lid + s]; }
    workgroupBarrier();
  }
  let r = scratch[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= params.rows) { return; }
  let base = row * params.classes;
  var m = -3.4e38;
  for (var c = lid; c < params.classes; c += WG) { m = max(m, logits[base + c]); }
  let row_max = reduce_max(lid, m);
  var s = 0.0;
  for (var c = lid; c < params.classes; c += WG) { s += exp(logits[base + c] - row_max); }
  let total = reduce_sum(lid, s);
  let label = labels[row];
  for (var c = lid; c < params.classes; c += WG) {
    let p = exp(logits[base + c] - row_max) / total;
    dlogits[base + c] = (p - select(0.0, 1.0, c == label)) * params.grad_scale;
  }
  if (lid == 0u) {
    loss[row] = log(total) + row_max - logits[base + label];
  }
}
