// Exponential moving average of one tensor: target <- m * target + (1 - m) * online, written as
// target + (1 - m) * (online - target): the same value, but a target equal to the online tensor
// stays bit-exact, and (1 - m) arrives precomputed in float64 (m is near 1, so 1 - m in f32
// from an f32 m would lose digits).
// main: one pair of tensors. pair: two pairs in one dispatch (a model's flat parameter buffers
// and its flat state buffers), element i < n of the first pair, n + i of the second.
// Bindings: 0 uniform {n, one_minus_m, n_second}; 1 online_values (read, f32 [n]); 2 target_values
// (read_write, f32 [n]); pair only: 3 online_second (read, f32 [n_second]); 4 target_second
// (read_write, f32 [n_second]).
// Dispatch: ceil(total / 1024) workgroups of 256 (4 elements per thread), folded into x-y
// (grid1d); total = n (main) or n + n_second (pair).

struct Params {
  n: u32,
  one_minus_m: f32,
  n_second: u32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> online_values: array<f32>;
@group(0) @binding(2) var<storage, read_write> target_values: array<f32>;
@group(0) @binding(3) var<storage, read> online_second: array<f32>;
@group(0) @binding(4) var<storage, read_write> target_second: array<f32>;

const WG: u32 = 256u;
const PER_THREAD: u32 = 4u;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let base = (wid.y * nwg.x + wid.x) * WG * PER_THREAD + lid;
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) {
      let t = target_values[i];
      target_values[i] = t + params.one_minus_m * (online_values[i] - t);
    }
  }
}

@compute @workgroup_size(256)
fn pair(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let base = (wid.y * nwg.x + wid.x) * WG * PER_THREAD + lid;
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) {
      let t = target_values[i];
      target_values[i] = t + params.one_minus_m * (online_values[i] - t);
    } else if (i - params.n < params.n_second) {
      let j = i - params.n;
      let t = target_second[j];
      target_second[j] = t + params.one_minus_m * (online_second[j] - t);
    }
  }
}
