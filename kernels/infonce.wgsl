// InfoNCE / NT-Xent (SimCLR) on the similarity matrix of 2n unit embeddings E = [a_hat; b_hat]:
// S = E E^T, logits S / tau. Row r's positive is its pair pos(r) = (r + n) mod 2n; its negatives are
// the other 2n - 2 entries; the diagonal is excluded.
//   loss_r = logsumexp_{j != r}(S_rj / tau) - S_r,pos(r) / tau,  loss = mean over the 2n rows.
// rows (one workgroup of 256 per row, max and sum in a fixed tree order): row_loss[r] = loss_r / 2n,
//   log_sum_exp[r] = the row's logsumexp (kept for the gradient).
// grad_symmetric (one thread per element): G = dL/dS made symmetric, so that dE = G E:
//   G_rj = (softmax_rj + softmax_jr - 2 [j == pos(r)]) / (2n tau) for j != r, G_rr = 0,
//   softmax_rj = exp(S_rj / tau - log_sum_exp[r]). (S_rj appears in row r and, as S_jr, in row j.)
// Bindings: 0 uniform Params; 1 similarity (read, f32 [2n, 2n]); 2 row_loss (read_write, f32 [2n]);
// 3 log_sum_exp (read_write, f32 [2n]); 4 grad (read_write, f32 [2n, 2n], grad_symmetric only).
// Dispatch: rows 2n workgroups, grad_symmetric ceil(4n^2 / 256), both folded into x-y (grid1d).

struct Params {
  n: u32,
  inv_tau: f32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> similarity: array<f32>;
@group(0) @binding(2) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> log_sum_exp: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, WG>;

fn positive_of(r: u32) -> u32 {
  return (r + params.n) % (2u * params.n);
}

@compute @workgroup_size(256)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;
  let width = 2u * params.n;
  if (r >= width) { return; }
  let base = r * width;
  // The row maximum (diagonal excluded) keeps exp() from overflowing.
  var row_max = -3.4e38;
  for (var j = lid; j < width; j += WG) {
    if (j != r) { row_max = max(row_max, similarity[base + j] * params.inv_tau); }
  }
  partial[lid] = row_max;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { partial[lid] = max(partial[lid], partial[lid + stride]); }
    workgroupBarrier();
  }
  row_max = partial[0];
  workgroupBarrier();
  var sum = 0.0;
  for (var j = lid; j < width; j += WG) {
    if (j != r) { sum += exp(similarity[base + j] * params.inv_tau - row_max); }
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let lse = row_max + log(partial[0]);
    log_sum_exp[r] = lse;
    let loss = lse - similarity[base + positive_of(r)] * params.inv_tau;
    row_loss[r] = loss / f32(width);
  }
}

@compute @workgroup_size(256)
fn grad_symmetric(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
  let width = 2u * params.n;
  let element = gid.y * nwg.x * WG + gid.x;
  if (element >= width * width) { return; }
  let r = element / width;
  let j = element % width;
  if (j == r) {
    grad[element] = 0.0;
    return;
  }
  let softmax_rj = exp(similarity[element] * params.inv_tau - log_sum_exp[r]);
  let softmax_jr = exp(similarity[j * width + r] * params.inv_tau - log_sum_exp[j]);
  let positive = select(0.0, 2.0, j == positive_of(r));
  grad[element] = (softmax_rj + softmax_jr - positive) * params.inv_tau / f32(width);
}
