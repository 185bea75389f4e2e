// LARS over many parameter tensors in one dispatch: the tensors are segments of flat weight,
// gradient and velocity buffers (the same offsets in all three), listed in a table. Workgroup s
// updates segment s whole, so each tensor's norms are finished before its update without a
// second pass: per-thread strided sums of squares in a fixed order, then a fixed tree over the
// workgroup (deterministic, no atomics), then METHOD.md's update as in optimizer.wgsl:
//   trust = excluded ? 1 : (|w| > 0 && |g| > 0 ? eta*|w| / (|g| + wd*|w|) : 1)
//   v <- mu*v + lr*trust*(g + wd*w);  w <- w - v          (wd = 0 when excluded)
// norms[2j] and norms[2j + 1], j = first_norm + s, receive |w| and |g| of every segment (excluded
// ones too, so a caller can watch them all for non-finite values; first_norm lets the groups of a
// model too large for one flat buffer share one norms tensor).
// Bindings: 0 uniform {segments, lr, momentum, weight_decay, eta, first_norm}; 1 table
// (u32 [segments, 3]: offset, length, excluded); 2 grad (read); 3 norms (read_write,
// f32 [2 * (first_norm + segments)]);
// 4 weight (read_write); 5 velocity (read_write).
// Dispatch: one workgroup of 256 per segment, folded into x-y (grid1d). A GPU would rather split
// long tensors over several workgroups (a second pass for the norms); one pass suits CPU
// adapters, where a workgroup runs on one core and the biggest tensor is a small share of all.

struct Params {
  segments: u32,
  lr: f32,
  momentum: f32,
  weight_decay: f32,
  eta: f32,
  first_norm: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> norms: array<f32>;
@group(0) @binding(4) var<storage, read_write> weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> velocity: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial_w: array<f32, WG>;
var<workgroup> partial_g: array<f32, WG>;

@compute @workgroup_size(256)
fn lars(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let segment = wid.y * nwg.x + wid.x;
  if (segment >= params.segments) { return; }
  let offset = table[3u * segment];
  let length = table[3u * segment + 1u];
  let excluded = table[3u * segment + 2u] != 0u;
  var sum_w = 0.0;
  var sum_g = 0.0;
  for (var i = lid; i < length; i += WG) {
    let w = weight[offset + i];
    let g = grad[offset + i];
    sum_w += w * w;
    sum_g += g * g;
  }
  partial_w[lid] = sum_w;
  partial_g[lid] = sum_g;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      partial_w[lid] += partial_w[lid + stride];
      partial_g[lid] += partial_g[lid + stride];
    }
    workgroupBarrier();
  }
  let w_norm = sqrt(partial_w[0]);
  let g_norm = sqrt(partial_g[0]);
  if (lid == 0u) {
    let j = params.first_norm + segment;
    norms[2u * j] = w_norm;
    norms[2u * j + 1u] = g_norm;
  }
  var trust = 1.0;
  var wd = 0.0;
  if (!excluded) {
    wd = params.weight_decay;
    if (w_norm > 0.0 && g_norm > 0.0) {
      trust = params.eta * w_norm / (g_norm + wd * w_norm);
    }
  }
  let scale = params.lr * trust;
  for (var i = lid; i < length; i += WG) {
    let w = weight[offset + i];
    let v = params.momentum * velocity[offset + i] + scale * (grad[offset + i] + wd * w);
    velocity[offset + i] = v;
    weight[offset + i] = w - v;
  }
}
