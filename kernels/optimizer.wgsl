// Optimizer updates for one parameter tensor of n elements, in place.
// lars: per METHOD.md, with |w| and |g| precomputed by reduce.wgsl into norms[norm_offset] and
// norms[norm_offset + 1] (one scratch buffer serves every parameter tensor):
//   trust = excluded ? 1 : (|w| > 0 && |g| > 0 ? eta*|w| / (|g| + wd*|w|) : 1)
//   v <- mu*v + lr*trust*(g + wd*w);  w <- w - v          (wd = 0 when excluded)
// sgd: PyTorch's SGD with momentum: v <- mu*v + (g + wd*w); w <- w - lr*v.
// Bindings: 0 uniform {n, lr, momentum, weight_decay, eta, excluded, norm_offset}; 1 grad (read);
// 2 norms (read, lars only); 3 weight (read_write); 4 velocity (read_write).
// Dispatch: ceil(n / 1024) workgroups of 256 (4 elements per thread), folded by grid1d.

struct Params {
  n: u32,
  lr: f32,
  momentum: f32,
  weight_decay: f32,
  eta: f32,
  excluded: u32,
  norm_offset: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> norms: array<f32>;
@group(0) @binding(3) var<storage, read_write> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> velocity: array<f32>;

const WG: u32 = 256u;
const PER_THREAD: u32 = 4u;

@compute @workgroup_size(256)
fn lars(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  var trust = 1.0;
  var wd = 0.0;
  if (params.excluded == 0u) {
    wd = params.weight_decay;
    let w_norm = norms[params.norm_offset];
    let g_norm = norms[params.norm_offset + 1u];
    if (w_norm > 0.0 && g_norm > 0.0) {
      trust = params.eta * w_norm / (g_norm + wd * w_norm);
    }
  }
  let scale = params.lr * trust;
  let base = (wid.y * nwg.x + wid.x) * WG * PER_THREAD + lid;
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) {
      let w = weight[i];
      let v = params.momentum * velocity[i] + scale * (grad[i] + wd * w);
      velocity[i] = v;
      weight[i] = w - v;
    }
  }
}

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
  let base = (wid.y * nwg.x + wid.x) * WG * PER_THREAD + lid;
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.n) {
      let w = weight[i];
      let v = params.momentum * velocity[i] + grad[i] + params.weight_decay * w;
      velocity[i] = v;
      weight[i] = w - params.lr * v;
    }
  }
}
