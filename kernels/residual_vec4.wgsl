// residual.wgsl's entry points on vec4s, for element counts divisible by 4 (every ResNet
// activation): on a CPU adapter each per-lane load is a loop over lanes, so one vec4 load costs
// about as much as one scalar load and this variant does a quarter of the loads.
// Bindings: as residual.wgsl (0 uniform {n4 = n / 4}; 1 a; 2 b; 3 out; 4 mask), viewed as vec4.
// Dispatch: ceil(n4 / 1024) workgroups of 256 (each thread 4 vec4s 256 apart), folded by grid1d.

struct Params {
  n4: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> mask: array<vec4<f32>>;

const WG: u32 = 256u;
const PER_THREAD: u32 = 4u;
const ZERO = vec4<f32>(0.0);

fn first_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG * PER_THREAD + lid;
}

@compute @workgroup_size(256)
fn add_relu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n4) { out[i] = max(a[i] + b[i], ZERO); }
  }
}

@compute @workgroup_size(256)
fn add_relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n4) { out[i] = select(ZERO, b[i], a[i] > ZERO); }
  }
}

@compute @workgroup_size(256)
fn add_masked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n4) { out[i] = a[i] + select(ZERO, b[i], mask[i] > ZERO); }
  }
}

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n4) { out[i] = a[i] + b[i]; }
  }
}
