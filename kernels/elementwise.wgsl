// Elementwise ops on flat f32 arrays of n elements.
// Bindings: 0 uniform {n, alpha, beta}; 1 a (read); 2 b (read); 3 out (read_write).
// Entry points use the subset they need: fill(out), copy(a->out), add(a+b->out),
// scale(alpha*a->out), axpy(out += alpha*a), axpby(out = alpha*a + beta*b),
// relu_forward(max(a,0)->out), relu_backward(b = dy, a = forward input or output -> out).
// Dispatch: ceil(n / 256 / 4) workgroups of 256 (each thread handles 4 elements), folded into
// x-y by grid1d; the linear index is wid.y * nwg.x + wid.x.

struct Params {
  n: u32,
  alpha: f32,
  beta: f32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;
const PER_THREAD: u32 = 4u;

fn first_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG * PER_THREAD + lid;
}

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) { out[i] = params.alpha; }
  }
}

@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) { out[i] = a[i]; }
  }
}

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) { out[i] = a[i] + b[i]; }
  }
}

@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) { out[i] = params.alpha * a[i]; }
  }
}

@compute @workgroup_size(256)
fn axpy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) { out[i] = out[i] + params.alpha * a[i]; }
  }
}

@compute @workgroup_size(256)
fn axpby(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) { out[i] = params.alpha * a[i] + params.beta * b[i]; }
  }
}

@compute @workgroup_size(256)
fn relu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) { out[i] = max(a[i], 0.0); }
  }
}

// The gradient passes where the forward value was positive; `a` may be ReLU's input or its
// output (both are positive at the same places).
@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) { out[i] = select(0.0, b[i], a[i] > 0.0); }
  }
}
