// The end of a ResNet block: out = relu(a + b), and its backward dSum = dOut where out > 0 (both
// branches, the residual path and the shortcut, then receive dSum). add_masked joins the two
// gradients at a block's input when the shortcut is the identity: out = a + (mask > 0 ? b : 0)
// (a = the branch's input gradient, b = dOut, mask = the forward output).
// Bindings: 0 uniform {n}; 1 a (read); 2 b (read); 3 out (read_write); 4 mask (read, add_masked
// only). The backward binds a = the forward output, b = dOut, out = dSum.
// Dispatch: ceil(n / 1024) workgroups of 256 (each thread handles 4 elements 256 apart), folded
// into x-y by grid1d; the linear workgroup index is wid.y * nwg.x + wid.x.

struct Params {
  n: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;

const WG: u32 = 256u;
const PER_THREAD: u32 = 4u;

fn first_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG * PER_THREAD + lid;
}

@compute @workgroup_size(256)
fn add_relu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) { out[i] = max(a[i] + b[i], 0.0); }
  }
}

// a = the forward output (positive exactly where the sum was), b = dOut.
@compute @workgroup_size(256)
fn add_relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) { out[i] = select(0.0, b[i], a[i] > 0.0); }
  }
}

@compute @workgroup_size(256)
fn add_masked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) { out[i] = a[i] + select(0.0, b[i], mask[i] > 0.0); }
  }
}

// out = a + b: a block's input gradient when the shortcut is a downsample (its own backward).
@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) { out[i] = a[i] + b[i]; }
  }
}
