// The truncated triplet loss of METHOD.md on a batch of n rows, forward and backward.
// Distances d_ij = -2 S_ij with S = P_hat Z_hat^T (cosines). Row i's positive is d_ii; its n - 1
// negatives come sorted ascending (the `sort` kernel with the diagonal masked and key scale -2), and
// the negative deputy d_an(i) is the mean of ranks window_first..window_last (1-based; a single
// rank when they are equal). l_i = max(0, gamma * d_ap(i) - d_an(i) + margin); loss = mean_i l_i.
//
// forward (one thread per row): row_loss[i] = l_i / n (a deterministic sum of row_loss is the
//   loss), hinge_open[i] = 1 where the hinge is open (l_i > 0), else 0.
// backward (one thread per element of dp_hat): the gradient w.r.t. p_hat_i,
//   dp_hat_i = hinge_open_i / n * (-2 gamma z_hat_i + 2 / |W| * sum_{r in window} z_hat_{index(i, r)}),
//   the window's negatives summed in rank order (deterministic). Z gets no gradient, the sort none.
//
// Bindings: 0 uniform Params; forward: 1 similarity (read, f32 [n, n]), 2 sorted_distances (read,
// f32 [n, m], the m >= window_last leading ranks), 3 row_loss (read_write, f32 [n]), 4 hinge_open
// (read_write, f32 [n]); backward: 4 hinge_open, 5 z_hat (read, f32 [n, d]), 6 sorted_index (read,
// u32 [n, m]), 7 dp_hat (read_write, f32 [n, d]).
// Dispatch: 256 threads per workgroup; forward ceil(n / 256) workgroups, backward ceil(n * d / 256)
// folded into x-y (grid1d); the linear thread is gid.y * nwg.x * 256 + gid.x.

struct Params {
  n: u32,
  dim: u32,
  sorted_cols: u32,
  window_first: u32,
  window_last: u32,
  gamma: f32,
  margin: f32,
  inv_n: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> similarity: array<f32>;
@group(0) @binding(2) var<storage, read> sorted_distances: array<f32>;
@group(0) @binding(3) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> hinge_open: array<f32>;
@group(0) @binding(5) var<storage, read> z_hat: array<f32>;
@group(0) @binding(6) var<storage, read> sorted_index: array<u32>;
@group(0) @binding(7) var<storage, read_write> dp_hat: array<f32>;

const WG: u32 = 256u;

fn window_size() -> f32 {
  return f32(params.window_last - params.window_first + 1u);
}

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.y * nwg.x * WG + gid.x;
  if (i >= params.n) { return; }
  let positive = -2.0 * similarity[i * params.n + i];
  let base = i * params.sorted_cols;
  var sum = 0.0;
  for (var rank = params.window_first; rank <= params.window_last; rank++) {
    sum += sorted_distances[base + rank - 1u];
  }
  let deputy = sum / window_size();
  let loss = max(0.0, params.gamma * positive - deputy + params.margin);
  row_loss[i] = loss * params.inv_n;
  hinge_open[i] = select(0.0, 1.0, loss > 0.0);
}

@compute @workgroup_size(256)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let element = gid.y * nwg.x * WG + gid.x;
  if (element >= params.n * params.dim) { return; }
  let i = element / params.dim;
  let c = element % params.dim;
  if (hinge_open[i] == 0.0) {
    dp_hat[element] = 0.0;
    return;
  }
  let base = i * params.sorted_cols;
  var negatives = 0.0;
  for (var rank = params.window_first; rank <= params.window_last; rank++) {
    negatives += z_hat[sorted_index[base + rank - 1u] * params.dim + c];
  }
  let gradient = -2.0 * params.gamma * z_hat[element] + 2.0 / window_size() * negatives;
  dp_hat[element] = hinge_open[i] * params.inv_n * gradient;
}
