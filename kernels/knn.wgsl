// Weighted kNN vote (the SSL kNN monitor): for each query row of a similarity matrix
// sim [queries, bank] (cosines of L2-normalised features), find its k most similar bank entries
// and add exp(sim / T) to the score of each neighbour's class.
// Selection without sorting: a 32-step bisection on the order-preserving integer key of the
// similarity finds the k-th largest value; ties at that value are taken in bank order (a prefix
// count over contiguous per-thread ranges), so the result is deterministic.
// Bindings: 0 uniform {queries, bank, k, classes, inv_temperature}; 1 sim (queries x bank);
// 2 labels (bank, u32); 3 scores (queries x classes, written).
// Dispatch: one workgroup of 256 threads per query row: (queries) folded by grid1d.

struct Params {
  queries: u32,
  bank: u32,
  k: u32,
  classes: u32,
  inv_temperature: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> sim: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;

const WG: u32 = 256u;
const MAX_K: u32 = 1024u;
const MAX_CLASSES: u32 = 1024u;

var<workgroup> counts: array<u32, WG>;
var<workgroup> chosen: array<u32, MAX_K>;
var<workgroup> class_scores: array<f32, MAX_CLASSES>;

// Maps f32 to u32 so that a < b as floats iff key(a) < key(b) as integers.
fn order_key(v: f32) -> u32 {
  let bits = bitcast<u32>(v);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

// Sum of counts[] over the workgroup (every thread gets it).
fn workgroup_total(lid: u32, value: u32) -> u32 {
  counts[lid] = value;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { counts[lid] += counts[lid + stride]; }
    workgroupBarrier();
  }
  let total = counts[0];
  workgroupBarrier();
  return total;
}

// Sum of `value` over the threads before this one (serial over 256 entries by thread 0).
fn exclusive_prefix(lid: u32, value: u32) -> u32 {
  counts[lid] = value;
  workgroupBarrier();
  if (lid == 0u) {
    var run = 0u;
    for (var t = 0u; t < WG; t++) {
      let c = counts[t];
      counts[t] = run;
      run += c;
    }
  }
  workgroupBarrier();
  let prefix = counts[lid];
  workgroupBarrier();
  return prefix;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= params.queries) { return; }  // uniform per workgroup
  let base = row * params.bank;
  let per_thread = (params.bank + WG - 1u) / WG;
  let begin = min(lid * per_thread, params.bank);
  let end = min(begin + per_thread, params.bank);
  let k = min(params.k, params.bank);

  // Largest key t with count(key >= t) >= k: bisection over the 32 key bits.
  var threshold = 0u;
  for (var bit = 31i; bit >= 0i; bit--) {
    let candidate = threshold | (1u << u32(bit));
    var mine = 0u;
    for (var i = begin; i < end; i++) {
      if (order_key(sim[base + i]) >= candidate) { mine++; }
    }
    if (workgroup_total(lid, mine) >= k) { threshold = candidate; }
  }

  // Strictly above the threshold are all taken; ties fill the rest in bank order.
  var above = 0u;
  var ties = 0u;
  for (var i = begin; i < end; i++) {
    let key = order_key(sim[base + i]);
    if (key > threshold) { above++; }
    if (key == threshold) { ties++; }
  }
  let total_above = workgroup_total(lid, above);
  // Where each thread's entries go: prefix counts over threads keep bank order.
  let tie_start = exclusive_prefix(lid, ties);
  var slot = exclusive_prefix(lid, above);
  var tie_rank = tie_start;
  let ties_wanted = k - total_above;
  for (var i = begin; i < end; i++) {
    let key = order_key(sim[base + i]);
    if (key > threshold) {
      chosen[slot] = i;
      slot++;
    } else if (key == threshold) {
      if (tie_rank < ties_wanted) { chosen[total_above + tie_rank] = i; }
      tie_rank++;
    }
  }
  for (var c = lid; c < params.classes; c += WG) { class_scores[c] = 0.0; }
  workgroupBarrier();
  // Votes in a fixed order (by slot) so sums are deterministic; k is small.
  if (lid == 0u) {
    for (var s = 0u; s < k; s++) {
      let j = chosen[s];
      let label = labels[j];
      class_scores[label] += exp(sim[base + j] * params.inv_temperature);
    }
  }
  workgroupBarrier();
  for (var c = lid; c < params.classes; c += WG) {
    scores[row * params.classes + c] = class_scores[c];
  }
}
