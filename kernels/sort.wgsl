// Stable ascending sort of every row of a [rows, cols] f32 matrix, carrying column indices:
// row r's output lists its entries in increasing (key, column) order, so equal keys keep column
// order (a stable sort). Keys are key_scale * x (key_scale = -2 turns cosines into distances,
// exactly: a power-of-two scale does not round). With mask_diagonal, column r of row r gets the
// key +inf, which ranks a similarity row's positive after all its finite negatives.
//
// Bitonic sort (the variant whose merges all run ascending: the first step of each merge compares
// mirrored pairs, the rest are half-cleaners). Rows are padded to P = a power of two >= cols with
// the largest key (all ones, above every float incl. NaN) and index = column, so the padding ends
// up past column cols - 1. Keys travel as order-preserving u32 (sign-flipped float bits), which
// makes the order total: -0 equals +0 (canonicalised), every NaN sorts after +inf.
//
// Rows of up to TILE elements sort in one workgroup (`sort_rows_in_tile`). Longer rows: each
// TILE-wide tile sorts in workgroup memory (`sort_tiles`), then every merge of block size k >= 2*TILE
// runs its compare distances j >= TILE as global passes over scratch (`merge_global`, one
// dispatch each; no workgroup ever waits on another) and its distances j < TILE in workgroup
// memory (`merge_tiles`, or `merge_tiles_final` for the last merge, which writes the output).
//
// Selection (when only the first out_cols <= RUN ranks are wanted, RUN a power of two >= 2 with
// 2 * RUN <= TILE): the truncated bitonic sort. Each tile sorts runs of RUN elements, then keeps
// halving: two sorted runs a, b merge into the RUN smallest of both as min(a_i, b_{RUN-1-i})
// (a bitonic sequence) followed by RUN/2 .. 1 half-cleaners. A tile ends with its RUN smallest in
// order; rows of several tiles repeat the reduction over the tiles' winners (`select_runs`, one
// dispatch per level, each level in its own scratch pair). The order is the same total order,
// so the output equals the full sort's first out_cols ranks exactly.
//
// Bindings: 0 uniform Params; 1 x (read, f32 [rows, cols]); 2 scratch_keys (read_write, u32
// [rows, P], sortable keys; the source level in selection); 3 scratch_index (read_write, u32
// [rows, P]); 4 out_keys (read_write, f32 [rows, out_cols]: the leading out_cols sorted keys);
// 5 out_index (read_write, u32 [rows, out_cols]); 6 next_keys, 7 next_index (read_write, u32
// [rows, width], the next selection level). Each entry point binds the subset it uses.
// Dispatch (64 threads per workgroup, grids folded into x-y, linear id wid.y * nwg.x + wid.x):
// sort_rows_in_tile: rows workgroups; sort_tiles and merge_tiles: rows * P / TILE; merge_tiles_final:
// rows * tiles_out (tiles holding the first out_cols ranks); merge_global: rows * P / 2 / 64;
// select_rows_in_tile: rows; select_tiles: rows * P / TILE; select_runs(_final): rows * width /
// TILE (width = the source level's elements per row). TILE and RUN (powers of two) are
// substituted by the wrapper.

struct Params {
  rows: u32,
  cols: u32,
  padded: u32,
  out_cols: u32,
  mask_diagonal: u32,
  key_scale: f32,
  block: u32,
  stride: u32,
  tiles_out: u32,
  width: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> scratch_keys: array<u32>;
@group(0) @binding(3) var<storage, read_write> scratch_index: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_keys: array<f32>;
@group(0) @binding(5) var<storage, read_write> out_index: array<u32>;
@group(0) @binding(6) var<storage, read_write> next_keys: array<u32>;
@group(0) @binding(7) var<storage, read_write> next_index: array<u32>;

// 64 threads: two warps on a GPU, and on a CPU adapter (lavapipe runs a workgroup as 8-lane
// batches switched at every barrier) half the time of 256 threads, measured on 4096-long rows.
const WG: u32 = 64u;
const TILE: u32 = {{TILE}}u;
const RUN: u32 = {{RUN}}u;
const PAD_KEY: u32 = 0xffffffffu;
// to_sortable(+inf): sign bit set on +inf's bits.
const INF_KEY: u32 = 0xff800000u;

// (key, index) pairs: one vec2 access per element instead of two scalar ones.
var<workgroup> tile: array<vec2<u32>, TILE>;

// Float bits -> u32 whose unsigned order is the float order (NaN canonicalised to the top).
fn to_sortable(value: f32) -> u32 {
  var bits = bitcast<u32>(value);
  let magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) { bits = 0x7fc00000u; }
  if (magnitude == 0u) { bits = 0u; }
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

fn from_sortable(key: u32) -> f32 {
  return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
}

// Whether (key_a, index_a) comes after (key_b, index_b): the total order that makes it stable.
fn after(key_a: u32, index_a: u32, key_b: u32, index_b: u32) -> bool {
  return key_a > key_b || (key_a == key_b && index_a > index_b);
}

fn input_key(row: u32, col: u32) -> u32 {
  if (col >= params.cols) { return PAD_KEY; }
  if (params.mask_diagonal != 0u && col == row) { return INF_KEY; }
  return to_sortable(params.key_scale * x[row * params.cols + col]);
}

fn tile_compare_exchange(lo: u32, hi: u32) {
  let a = tile[lo];
  let b = tile[hi];
  if (after(a.x, a.y, b.x, b.y)) {
    tile[lo] = b;
    tile[hi] = a;
  }
}

// Positions compared in step (block, stride) by pair t: mirrored pairs when stride is half the
// block (the merge's first step), else half-cleaner pairs stride apart.
fn pair_positions(t: u32, block: u32, stride: u32) -> vec2<u32> {
  let start = (t / stride) * 2u * stride;
  let offset = t % stride;
  if (2u * stride == block) {
    return vec2<u32>(start + offset, start + block - 1u - offset);
  }
  return vec2<u32>(start + offset, start + offset + stride);
}

// Half-cleaners with distances len/2 .. 1 over the first len tile elements.
fn tile_half_cleaners(lid: u32, len: u32, first_stride: u32) {
  for (var stride = first_stride; stride > 0u; stride >>= 1u) {
    for (var t = lid; t < len / 2u; t += WG) {
      let at = pair_positions(t, 0u, stride);
      tile_compare_exchange(at.x, at.y);
    }
    workgroupBarrier();
  }
}

// A full bitonic sort of the first len (a power of two) tile elements.
fn tile_sort(lid: u32, len: u32) {
  workgroupBarrier();
  for (var block = 2u; block <= len; block <<= 1u) {
    for (var t = lid; t < len / 2u; t += WG) {
      let at = pair_positions(t, block, block / 2u);
      tile_compare_exchange(at.x, at.y);
    }
    workgroupBarrier();
    tile_half_cleaners(lid, len, block / 4u);
  }
}

fn store_output(lid: u32, row: u32, first_rank: u32, count: u32) {
  let base = row * params.out_cols + first_rank;
  for (var c = lid; c < count; c += WG) {
    out_keys[base + c] = from_sortable(tile[c].x);
    out_index[base + c] = tile[c].y;
  }
}

@compute @workgroup_size(64)
fn sort_rows_in_tile(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= params.rows) { return; }
  let len = params.padded;
  for (var c = lid; c < len; c += WG) {
    tile[c] = vec2<u32>(input_key(row, c), c);
  }
  tile_sort(lid, len);
  store_output(lid, row, 0u, params.out_cols);
}

@compute @workgroup_size(64)
fn sort_tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let tiles_per_row = params.padded / TILE;
  let linear = wid.y * nwg.x + wid.x;
  if (linear >= params.rows * tiles_per_row) { return; }
  let row = linear / tiles_per_row;
  let first = (linear % tiles_per_row) * TILE;
  for (var c = lid; c < TILE; c += WG) {
    tile[c] = vec2<u32>(input_key(row, first + c), first + c);
  }
  tile_sort(lid, TILE);
  let base = row * params.padded + first;
  for (var c = lid; c < TILE; c += WG) {
    scratch_keys[base + c] = tile[c].x;
    scratch_index[base + c] = tile[c].y;
  }
}

@compute @workgroup_size(64)
fn merge_global(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
  let pairs_per_row = params.padded / 2u;
  let pair = gid.y * nwg.x * WG + gid.x;
  if (pair >= params.rows * pairs_per_row) { return; }
  let row = pair / pairs_per_row;
  let at = pair_positions(pair % pairs_per_row, params.block, params.stride) + row * params.padded;
  let key_lo = scratch_keys[at.x];
  let key_hi = scratch_keys[at.y];
  let index_lo = scratch_index[at.x];
  let index_hi = scratch_index[at.y];
  if (after(key_lo, index_lo, key_hi, index_hi)) {
    scratch_keys[at.x] = key_hi;
    scratch_keys[at.y] = key_lo;
    scratch_index[at.x] = index_hi;
    scratch_index[at.y] = index_lo;
  }
}

fn load_scratch_tile(lid: u32, base: u32) {
  for (var c = lid; c < TILE; c += WG) {
    tile[c] = vec2<u32>(scratch_keys[base + c], scratch_index[base + c]);
  }
  workgroupBarrier();
}

@compute @workgroup_size(64)
fn merge_tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let tiles_per_row = params.padded / TILE;
  let linear = wid.y * nwg.x + wid.x;
  if (linear >= params.rows * tiles_per_row) { return; }
  let base = (linear / tiles_per_row) * params.padded + (linear % tiles_per_row) * TILE;
  load_scratch_tile(lid, base);
  tile_half_cleaners(lid, TILE, TILE / 2u);
  for (var c = lid; c < TILE; c += WG) {
    scratch_keys[base + c] = tile[c].x;
    scratch_index[base + c] = tile[c].y;
  }
}

@compute @workgroup_size(64)
fn merge_tiles_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let linear = wid.y * nwg.x + wid.x;
  if (linear >= params.rows * params.tiles_out) { return; }
  let row = linear / params.tiles_out;
  let first = (linear % params.tiles_out) * TILE;
  load_scratch_tile(lid, row * params.padded + first);
  tile_half_cleaners(lid, TILE, TILE / 2u);
  store_output(lid, row, first, min(TILE, params.out_cols - first));
}

// Selection: sort every RUN-long run of the tile's first len elements (blocks 2 .. RUN).
fn tile_sort_runs(lid: u32, len: u32) {
  workgroupBarrier();
  for (var block = 2u; block <= RUN; block <<= 1u) {
    for (var t = lid; t < len / 2u; t += WG) {
      let at = pair_positions(t, block, block / 2u);
      tile_compare_exchange(at.x, at.y);
    }
    workgroupBarrier();
    tile_half_cleaners(lid, len, block / 4u);
  }
}

// Selection: reduce the sorted runs of the tile's first len elements to the RUN smallest, in
// order, at positions 0 .. RUN-1. Winners stay where their first run was, so after the round with
// run spacing `spacing` the live runs start at multiples of 2 * spacing (no two threads ever touch
// the same element within a step).
fn tile_reduce_runs(lid: u32, len: u32) {
  for (var spacing = RUN; spacing < len; spacing <<= 1u) {
    let merges = len / (2u * spacing);
    for (var t = lid; t < merges * RUN; t += WG) {
      let base = (t / RUN) * 2u * spacing;
      let i = t % RUN;
      let lo = base + i;
      let hi = base + spacing + RUN - 1u - i;
      let a = tile[lo];
      let b = tile[hi];
      if (after(a.x, a.y, b.x, b.y)) { tile[lo] = b; }
    }
    workgroupBarrier();
    for (var stride = RUN / 2u; stride > 0u; stride >>= 1u) {
      for (var t = lid; t < merges * RUN / 2u; t += WG) {
        let base = (t / (RUN / 2u)) * 2u * spacing;
        let at = pair_positions(t % (RUN / 2u), 0u, stride) + base;
        tile_compare_exchange(at.x, at.y);
      }
      workgroupBarrier();
    }
  }
}

fn store_run_to_next(lid: u32, row: u32, tile_in_row: u32, next_width: u32) {
  let base = row * next_width + tile_in_row * RUN;
  for (var c = lid; c < RUN; c += WG) {
    next_keys[base + c] = tile[c].x;
    next_index[base + c] = tile[c].y;
  }
}

@compute @workgroup_size(64)
fn select_rows_in_tile(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= params.rows) { return; }
  let len = params.padded;
  for (var c = lid; c < len; c += WG) {
    tile[c] = vec2<u32>(input_key(row, c), c);
  }
  tile_sort_runs(lid, len);
  tile_reduce_runs(lid, len);
  store_output(lid, row, 0u, params.out_cols);
}

@compute @workgroup_size(64)
fn select_tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let tiles_per_row = params.padded / TILE;
  let linear = wid.y * nwg.x + wid.x;
  if (linear >= params.rows * tiles_per_row) { return; }
  let row = linear / tiles_per_row;
  let tile_in_row = linear % tiles_per_row;
  let first = tile_in_row * TILE;
  for (var c = lid; c < TILE; c += WG) {
    tile[c] = vec2<u32>(input_key(row, first + c), first + c);
  }
  tile_sort_runs(lid, TILE);
  tile_reduce_runs(lid, TILE);
  store_run_to_next(lid, row, tile_in_row, tiles_per_row * RUN);
}

// Loads one tile of the source level (already sorted runs of RUN) from scratch.
fn load_level_tile(lid: u32, row: u32, tile_in_row: u32) {
  let base = row * params.width + tile_in_row * TILE;
  for (var c = lid; c < TILE; c += WG) {
    tile[c] = vec2<u32>(scratch_keys[base + c], scratch_index[base + c]);
  }
  workgroupBarrier();
}

@compute @workgroup_size(64)
fn select_runs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let tiles_per_row = params.width / TILE;
  let linear = wid.y * nwg.x + wid.x;
  if (linear >= params.rows * tiles_per_row) { return; }
  let row = linear / tiles_per_row;
  let tile_in_row = linear % tiles_per_row;
  load_level_tile(lid, row, tile_in_row);
  tile_reduce_runs(lid, TILE);
  store_run_to_next(lid, row, tile_in_row, tiles_per_row * RUN);
}

@compute @workgroup_size(64)
fn select_runs_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= params.rows) { return; }
  load_level_tile(lid, row, 0u);
  tile_reduce_runs(lid, TILE);
  store_output(lid, row, 0u, params.out_cols);
}
