// Exponential moving average of one tensor: target <- m * target + (1 - m) * online, written as
// target + (1 - m) * (online - target): the same value, but a target equal to the online tensor
// stays bit-exact, and (1 - m) arrives precomputed in float64 (m is near 1, so 1 - m in f32
// from an f32 m would lose digits).
// Bindings: 0 uniform {n, one_minus_m}; 1 online_values (read, f32 [n]); 2 target_values (read_write,
// f32 [n]).
// Dispatch: ceil(n / 1024) workgroups of 256 (4 elements per thread), folded into x-y (grid1d).

struct Params {
  n: u32,
  one_minus_m: f32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> online_values: array<f32>;
@group(0) @binding(2) var<storage, read_write> target_values: array<f32>;

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
