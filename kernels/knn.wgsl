// Weighted kNN vote (the SSL kNN monitor): for each query row of a similarity matrix
// sim [queries, bank] (cosines of L2-normalised features), find its k most similar bank entries
// and add exp(sim / T) to the score of each neighbour's class.
// Selection without sorting: a 32-step bisection on the order-preserving integer key of the
// similarity finds the k-th largest value; ties at that value are taken in bank order (a prefix
// count over contiguous per-thread ranges), so the result is deterministic.
// Entry points:
// - main: the whole bank in one sim matrix. Bindings: 0 uniform; 1 sim (queries x bank);
//   2 labels (bank, u32); 3 scores (queries x classes, written).
// - merge: a bank too big for one binding, block by block. Each query keeps its top-k so far
//   (values 4 and labels 5, `kept` per row, row stride `stride`, in bank order); the kept entries
//   followed by this block's sim row (bank = the block's columns, labels 2 the block's labels)
//   are one row in bank order, whose top-k under the same rule (value, then bank order) is
//   written in bank order to 6 / 7. Top-k of (top-k of a prefix + the next block) = top-k of
//   both, so after the last block each query holds the single-matrix top-k exactly.
// - vote: the class scores from merged candidates (values 4, labels 5, `kept` per row) summed in
//   main's order: entries above the k-th value in bank order, then those equal to it in bank
//   order, so the scores are bitwise those of main on the whole bank. Writes 3.
// Dispatch: one workgroup of 256 threads per query row: (queries) folded by grid1d.

struct Params {
  queries: u32,
  bank: u32,
  k: u32,
  classes: u32,
  inv_temperature: f32,
  kept: u32,
  stride: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> sim: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
@group(0) @binding(4) var<storage, read> kept_values: array<f32>;
@group(0) @binding(5) var<storage, read> kept_labels: array<u32>;
@group(0) @binding(6) var<storage, read_write> next_values: array<f32>;
@group(0) @binding(7) var<storage, read_write> next_labels: array<u32>;

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

// Entry j of the merged row: the kept candidates first, then the block's columns.
fn merged_value(row: u32, j: u32) -> f32 {
  if (j < params.kept) { return kept_values[row * params.stride + j]; }
  return sim[row * params.bank + (j - params.kept)];
}

fn merged_label(row: u32, j: u32) -> u32 {
  if (j < params.kept) { return kept_labels[row * params.stride + j]; }
  return labels[j - params.kept];
}

@compute @workgroup_size(256)
fn merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= params.queries) { return; }  // uniform per workgroup
  let n = params.kept + params.bank;
  let per_thread = (n + WG - 1u) / WG;
  let begin = min(lid * per_thread, n);
  let end = min(begin + per_thread, n);
  let k = min(params.k, n);

  // The k-th largest key, as in main.
  var threshold = 0u;
  for (var bit = 31i; bit >= 0i; bit--) {
    let candidate = threshold | (1u << u32(bit));
    var mine = 0u;
    for (var i = begin; i < end; i++) {
      if (order_key(merged_value(row, i)) >= candidate) { mine++; }
    }
    if (workgroup_total(lid, mine) >= k) { threshold = candidate; }
  }

  var above = 0u;
  var ties = 0u;
  for (var i = begin; i < end; i++) {
    let key = order_key(merged_value(row, i));
    if (key > threshold) { above++; }
    if (key == threshold) { ties++; }
  }
  let ties_wanted = k - workgroup_total(lid, above);
  let tie_start = exclusive_prefix(lid, ties);
  // This thread's ties that are taken: ranks tie_start.. below ties_wanted.
  let taken_ties = select(0u, min(ties, ties_wanted - tie_start), ties_wanted > tie_start);
  // Output in bank order: each thread writes after the entries taken by the threads before it.
  var slot = exclusive_prefix(lid, above + taken_ties);
  var tie_rank = tie_start;
  let out_base = row * params.stride;
  for (var i = begin; i < end; i++) {
    let value = merged_value(row, i);
    let key = order_key(value);
    var take = key > threshold;
    if (key == threshold) {
      take = tie_rank < ties_wanted;
      tie_rank++;
    }
    if (take) {
      next_values[out_base + slot] = value;
      next_labels[out_base + slot] = merged_label(row, i);
      slot++;
    }
  }
}

// Smallest of `value` over the workgroup (every thread gets it).
fn workgroup_min(lid: u32, value: u32) -> u32 {
  counts[lid] = value;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { counts[lid] = min(counts[lid], counts[lid + stride]); }
    workgroupBarrier();
  }
  let smallest = counts[0];
  workgroupBarrier();
  return smallest;
}

@compute @workgroup_size(256)
fn vote(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= params.queries) { return; }  // uniform per workgroup
  let base = row * params.stride;
  let n = params.kept;
  // The merged candidates are exactly the top-k: the k-th largest value is their smallest.
  var smallest = 0xffffffffu;
  for (var i = lid; i < n; i += WG) { smallest = min(smallest, order_key(kept_values[base + i])); }
  let threshold = workgroup_min(lid, smallest);
  for (var c = lid; c < params.classes; c += WG) { class_scores[c] = 0.0; }
  workgroupBarrier();
  // main's slot order: above the threshold in bank order, then the ties in bank order.
  if (lid == 0u) {
    for (var i = 0u; i < n; i++) {
      let value = kept_values[base + i];
      if (order_key(value) > threshold) {
        class_scores[kept_labels[base + i]] += exp(value * params.inv_temperature);
      }
    }
    for (var i = 0u; i < n; i++) {
      let value = kept_values[base + i];
      if (order_key(value) == threshold) {
        class_scores[kept_labels[base + i]] += exp(value * params.inv_temperature);
      }
    }
  }
  workgroupBarrier();
  for (var c = lid; c < params.classes; c += WG) {
    scores[row * params.classes + c] = class_scores[c];
  }
}
