// Batch normalisation over a [rows, C] matrix (NHWC activations: rows = N*H*W for BatchNorm2d,
// rows = N for BatchNorm1d), training and evaluation forward, and the training backward.
//
// Per-channel statistics are column reductions over rows, done deterministically in two passes
// (no atomics, fixed order, so the same inputs give the same bits):
//   1. *_partial: workgroup (tile, block) reduces TILE_C channels over one block of rows_per_block
//      rows; 256 threads = TILE_C columns x LANES row lanes (consecutive threads read consecutive
//      channels of a row). Lanes merge in a fixed tree in workgroup memory; one partial per block.
//   2. grad_final: workgroup (tile) merges the num_blocks partials of TILE_C channels: each lane
//      walks blocks lane, lane + LANES, ... in order, then the same fixed tree. stats_final: one
//      thread per channel merges the blocks in order.
// Mean and variance use Chan et al.'s pairwise combination of (count, mean, centred sum of squares):
// each thread takes CHUNK rows into registers, computes their mean and then their *centred* sum of
// squares exactly (two passes over registers), and merges; no sum-of-squares cancellation.
//
// Bindings (an entry point binds only what it uses; see kernels/batchnorm.ts):
//   0 uniform Params
//   1 x [rows, C]              (read)        forward input
//   2 gamma [C]                (read)
//   3 beta [C]                 (read)
//   4 mean [groups, C]         (read_write)  saved batch mean per stacked view (train; a call
//                                            reads the view's row at stat_offset), or running
//                                            mean (eval)
//   5 inv_std [groups, C]      (read_write)  saved 1/sqrt(biased var + eps) per view (train), or
//                                            running variance (eval, FROM_VARIANCE)
//   6 running_mean [C]         (read_write)  updated in place by stats_final
//   7 running_var [C]          (read_write)  updated in place by stats_final (unbiased variance)
//   8 partials [groups x num_blocks, 3 or 2, C] (read_write) per-block statistics (each view's
//                                            blocks from block_offset) / gradient sums
//   9 y [rows, C]              (read_write)  forward output
//  10 dy [rows, C]             (read)        upstream gradient
//  11 relu_out [rows, C]       (read)        forward output when ReLU was fused (RELU): mask for dy
//  12 grad_sums [groups, 2, C] (read_write) this batch's sum(dy), sum(dy * xhat) per view
//  13 dgamma [C]               (read_write)  overwritten, or += with ACCUMULATE (grad_final adds
//                                            the views' sums one after another)
//  14 dbeta [C]                (read_write)  overwritten, or += with ACCUMULATE
//  15 dx [rows, C]             (read_write)
//  16 residual [rows, C]       (read)        normalize with RESIDUAL: added before the ReLU (the
//                                            shortcut of a ResNet block), y = relu(bn(x) + residual)
// Dispatch grids: *_partial (ceil(C / TILE_C), num_blocks); grad_final (ceil(C / TILE_C)), which
// merges `groups` views' num_blocks partials each (batchnorm_vec4.wgsl writes them in one pass);
// stats_final (ceil(C / 64));
// normalize and input_grad ceil(rows * C / 1024) workgroups folded into x-y (grid1d), each thread
// handling 4 elements 256 apart.

override TILE_C: u32 = 64u;        // channels per workgroup: a power of two, 4..256
override RELU: bool = false;       // fuse ReLU into the forward output / mask dy in the backward
override ACCUMULATE: bool = false; // dgamma/dbeta += instead of =
override FROM_VARIANCE: bool = false; // normalize: binding 5 holds a variance, not 1/std (eval)
override RESIDUAL: bool = false;   // normalize: add binding 16 before the ReLU

struct Params {
  rows: u32,
  channels: u32,
  rows_per_block: u32,
  num_blocks: u32,
  total: u32,       // rows * channels
  eps: f32,
  momentum: f32,
  // Index of this call's first statistic in mean / inv_std: the view's when several views' rows
  // were normalised apart (stats_final writes groups x C of them).
  stat_offset: u32,
  groups: u32,        // stats_final, grad_final: views, each num_blocks partials, merged in order
  block_offset: u32,  // stats_partial: index of this call's first block in partials
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> inv_std: array<f32>;
@group(0) @binding(6) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(7) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(8) var<storage, read_write> partials: array<f32>;
@group(0) @binding(9) var<storage, read_write> y: array<f32>;
@group(0) @binding(10) var<storage, read> dy: array<f32>;
@group(0) @binding(11) var<storage, read> relu_out: array<f32>;
@group(0) @binding(12) var<storage, read_write> grad_sums: array<f32>;
@group(0) @binding(13) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(14) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(15) var<storage, read_write> dx: array<f32>;
@group(0) @binding(16) var<storage, read> residual: array<f32>;

const WG: u32 = 256u;
const CHUNK: u32 = 8u;       // rows a thread holds in registers per step of stats_partial
const PER_THREAD: u32 = 4u;  // elements per thread in the elementwise entry points

var<workgroup> shared_n: array<f32, WG>;
var<workgroup> shared_mean: array<f32, WG>;
var<workgroup> shared_m2: array<f32, WG>;

// Count, mean and centred sum of squares of a set of values.
struct Moments {
  n: f32,
  mean: f32,
  m2: f32,
}

// Chan, Golub, LeVeque: the moments of the union of two disjoint sets.
fn merge(a: Moments, b: Moments) -> Moments {
  if (b.n == 0.0) { return a; }
  if (a.n == 0.0) { return b; }
  let n = a.n + b.n;
  let delta = b.mean - a.mean;
  let fraction_b = b.n / n;
  return Moments(n, a.mean + delta * fraction_b, a.m2 + b.m2 + delta * delta * a.n * fraction_b);
}

// Merge the LANES moments of each column held in shared_* into lane 0, in a fixed tree.
fn tree_merge_lanes(lane: u32, col: u32) {
  for (var stride = (WG / TILE_C) / 2u; stride > 0u; stride >>= 1u) {
    if (lane < stride) {
      let i = lane * TILE_C + col;
      let j = (lane + stride) * TILE_C + col;
      let m = merge(Moments(shared_n[i], shared_mean[i], shared_m2[i]),
                    Moments(shared_n[j], shared_mean[j], shared_m2[j]));
      shared_n[i] = m.n;
      shared_mean[i] = m.mean;
      shared_m2[i] = m.m2;
    }
    workgroupBarrier();
  }
}

// Sum the LANES values of each column held in shared_mean / shared_m2 (reused as two sums).
fn tree_sum_lanes(lane: u32, col: u32) {
  for (var stride = (WG / TILE_C) / 2u; stride > 0u; stride >>= 1u) {
    if (lane < stride) {
      let i = lane * TILE_C + col;
      let j = (lane + stride) * TILE_C + col;
      shared_mean[i] += shared_mean[j];
      shared_m2[i] += shared_m2[j];
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(256)
fn stats_partial(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let lanes = WG / TILE_C;
  let col = lid % TILE_C;
  let lane = lid / TILE_C;
  let c = wid.x * TILE_C + col;
  let row_start = wid.y * params.rows_per_block;
  let row_stop = min(row_start + params.rows_per_block, params.rows);
  var acc = Moments(0.0, 0.0, 0.0);
  if (c < params.channels) {
    for (var r0 = row_start + lane; r0 < row_stop; r0 += lanes * CHUNK) {
      var values: array<f32, CHUNK>;
      var count = 0u;
      var sum = 0.0;
      for (var k = 0u; k < CHUNK; k++) {
        let r = r0 + k * lanes;
        if (r < row_stop) {
          values[k] = x[r * params.channels + c];
          sum += values[k];
          count++;
        }
      }
      let chunk_mean = sum / f32(count);
      var chunk_m2 = 0.0;
      for (var k = 0u; k < count; k++) {
        let d = values[k] - chunk_mean;
        chunk_m2 += d * d;
      }
      acc = merge(acc, Moments(f32(count), chunk_mean, chunk_m2));
    }
  }
  shared_n[lid] = acc.n;
  shared_mean[lid] = acc.mean;
  shared_m2[lid] = acc.m2;
  workgroupBarrier();
  tree_merge_lanes(lane, col);
  if (lane == 0u && c < params.channels) {
    let base = (params.block_offset + wid.y) * 3u * params.channels + c;
    partials[base] = shared_n[col];
    partials[base + params.channels] = shared_mean[col];
    partials[base + 2u * params.channels] = shared_m2[col];
  }
}

// One thread per channel merges the num_blocks partials in block order: a few merges per
// channel, with no workgroup tree and no barriers (which dominated this small pass on CPUs).
// With several views (groups) the same thread merges each view's blocks in turn, writes its
// statistics at g * C + c and updates the running statistics view after view, as separate calls
// would.
@compute @workgroup_size(64)
fn stats_final(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= params.channels) { return; }
  for (var g = 0u; g < params.groups; g++) {
    var acc = Moments(0.0, 0.0, 0.0);
    for (var b = g * params.num_blocks; b < (g + 1u) * params.num_blocks; b++) {
      let base = b * 3u * params.channels + c;
      acc = merge(acc, Moments(partials[base], partials[base + params.channels],
                               partials[base + 2u * params.channels]));
    }
    let stat = g * params.channels + c;
    mean[stat] = acc.mean;
    // Normalisation uses the biased variance; the running estimate the unbiased one (PyTorch).
    inv_std[stat] = 1.0 / sqrt(acc.m2 / acc.n + params.eps);
    let m = params.momentum;
    running_mean[c] = (1.0 - m) * running_mean[c] + m * acc.mean;
    running_var[c] = (1.0 - m) * running_var[c] + m * (acc.m2 / (acc.n - 1.0));
  }
}

fn first_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG * PER_THREAD + lid;
}

// y = (x - mean) * inv_std * gamma + beta (then ReLU when fused).
@compute @workgroup_size(256)
fn normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.total) {
      let c = i % params.channels;
      let stat = inv_std[params.stat_offset + c];
      let scale = select(stat, 1.0 / sqrt(stat + params.eps), FROM_VARIANCE);
      var v = (x[i] - mean[params.stat_offset + c]) * scale * gamma[c] + beta[c];
      if (RESIDUAL) { v = v + residual[i]; }
      if (RELU) { v = max(v, 0.0); }
      y[i] = v;
    }
  }
}

// The upstream gradient, masked by the fused ReLU's output.
fn masked_dy(i: u32) -> f32 {
  let g = dy[i];
  if (RELU) { return select(0.0, g, relu_out[i] > 0.0); }
  return g;
}

@compute @workgroup_size(256)
fn grad_partial(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let lanes = WG / TILE_C;
  let col = lid % TILE_C;
  let lane = lid / TILE_C;
  let c = wid.x * TILE_C + col;
  let row_start = wid.y * params.rows_per_block;
  let row_stop = min(row_start + params.rows_per_block, params.rows);
  var sum_dy = 0.0;
  var sum_dy_xhat = 0.0;
  if (c < params.channels) {
    let mu = mean[params.stat_offset + c];
    let s = inv_std[params.stat_offset + c];
    for (var r = row_start + lane; r < row_stop; r += lanes) {
      let i = r * params.channels + c;
      let g = masked_dy(i);
      sum_dy += g;
      sum_dy_xhat += g * ((x[i] - mu) * s);
    }
  }
  shared_mean[lid] = sum_dy;
  shared_m2[lid] = sum_dy_xhat;
  workgroupBarrier();
  tree_sum_lanes(lane, col);
  if (lane == 0u && c < params.channels) {
    let base = wid.y * 2u * params.channels + c;
    partials[base] = shared_mean[col];
    partials[base + params.channels] = shared_m2[col];
  }
}

@compute @workgroup_size(256)
fn grad_final(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let lanes = WG / TILE_C;
  let col = lid % TILE_C;
  let lane = lid / TILE_C;
  let c = wid.x * TILE_C + col;
  for (var g = 0u; g < params.groups; g++) {
    var sum_dy = 0.0;
    var sum_dy_xhat = 0.0;
    if (c < params.channels) {
      for (var b = lane; b < params.num_blocks; b += lanes) {
        let base = (g * params.num_blocks + b) * 2u * params.channels + c;
        sum_dy += partials[base];
        sum_dy_xhat += partials[base + params.channels];
      }
    }
    shared_mean[lid] = sum_dy;
    shared_m2[lid] = sum_dy_xhat;
    workgroupBarrier();
    tree_sum_lanes(lane, col);
    if (lane == 0u && c < params.channels) {
      let db = shared_mean[col];
      let dg = shared_m2[col];
      // input_grad needs this batch's sums even when dgamma/dbeta accumulate across
      // micro-batches. Views add in order, as separate calls with ACCUMULATE would.
      grad_sums[g * 2u * params.channels + c] = db;
      grad_sums[(g * 2u + 1u) * params.channels + c] = dg;
      let add = ACCUMULATE || g > 0u;
      dbeta[c] = select(db, dbeta[c] + db, add);
      dgamma[c] = select(dg, dgamma[c] + dg, add);
    }
    // The next view reuses the workgroup memory this one's lane 0 just read.
    workgroupBarrier();
  }
}

// dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)), dy masked by the ReLU.
@compute @workgroup_size(256)
fn input_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let base = first_index(wid, nwg, lid);
  let inv_rows = 1.0 / f32(params.rows);
  for (var k = 0u; k < PER_THREAD; k++) {
    let i = base + k * WG;
    if (i < params.total) {
      let c = i % params.channels;
      let s = inv_std[params.stat_offset + c];
      let xhat = (x[i] - mean[params.stat_offset + c]) * s;
      let mean_dy = grad_sums[c] * inv_rows;
      let mean_dy_xhat = grad_sums[params.channels + c] * inv_rows;
      dx[i] = gamma[c] * s * (masked_dy(i) - mean_dy - xhat * mean_dy_xhat);
    }
  }
}
