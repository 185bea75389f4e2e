// Matrix multiply C = op(A) · op(B) (+ bias) (+ old C when accumulating), f32, optionally batched,
// plus `copy_padded`, which copies matrices into or out of the zero-padded layouts `main` reads.
//
// main: op(A) is M x K, read from A stored [M, K] row-major, or [K, M] when TRANSPOSE_A.
//   op(B) is K x N, read from B stored [K, N] row-major, or [N, K] when TRANSPOSE_B.
//   Every matrix is read and written as vec4: stored rows are lda4 / ldb4 / ldc4 vec4 long
//   (covering the logical row), and K is a multiple of 4 with zeros past the logical K (the
//   wrapper pads what is not). C is [M, ldc4 * 4] row-major; columns past N are scratch.
//   Batched: matrix z starts at z * a_batch4 / b_batch4 / c_batch4 vec4 (b_batch4 = 0 shares
//   one B across the batch).
//   Bindings: 0 uniform Params; 1 a (read); 3 b (read); 5 c (read_write); 7 bias (read) [N],
//   added to every row when has_bias; 8 a_texture, 9 b_texture: read-only rgba32float storage
//   textures holding a and b's vec4 in order, TEXTURE_WIDTH per row, read instead of a and b when
//   TEXTURE_OPERANDS (the wrapper binds a placeholder otherwise). On lavapipe a per-lane texel load
//   costs about a third of a storage-buffer vec4 load (see below), and loads dominate.
//   Dispatch: (ceil(N / (16 lanes_n)), ceil(M / (16 (8 / lanes_n))), batch) workgroups of 8
//   invocations; each invocation computes a 16 x 16 block of C.
//
// copy_padded: target[z][r][c] = source[z][r][c] where r < source_rows and c < source_cols, else
//   0, for every element of a batch x target_rows x target_cols target (source and target have
//   the same batch; either may be the larger). Bindings: 0 uniform CopyParams; 2 copy_source
//   (read); 4 copy_target (read_write). Dispatch: (ceil(target_cols / 64), min(target_rows,
//   65535), batch) workgroups of 64; rows beyond the grid height loop.
//
// Why main is shaped like this (measured on lavapipe, which runs 8 invocations as the 8 lanes of
// one 256-bit SIMD register): every storage load whose address differs between lanes becomes a
// scalar loop over the lanes with a bounds check per component, so loads, not arithmetic,
// dominate; a vec4 load costs ~2.3x a scalar one but brings 4 values. Each invocation therefore
// owns a 16 x 16 block of C (64 vec4 accumulators) and, per 4 steps of k, loads 16 vec4 of A and
// 16 vec4 of B for 1024 multiply-adds. Workgroup memory does not help: its loads cost the same per
// lane, and barriers add coroutine switches. When N is wide the 8 lanes of a workgroup sit side
// by side along N, so they read the same rows of A (lanes along M measured 1.5-3x slower). Rows
// and columns past M and N are clamped to the last valid one (their results are never stored),
// so the hot loop has no branches. Unrolled code is written out by hand: NIR does not unroll the
// loops of a looped version, whose register arrays then live in memory (3x slower). Padding
// instead of scalar code paths keeps specialisations few (4) and small: lavapipe compiles one in
// ~1.5 s of CPU, where an earlier version with scalar load and store paths took 2-4 s each.
// A texel load from a storage texture skips the per-lane loop (~0.7 ns per vec4 instead of ~2 ns),
// so on CPU adapters the wrapper copies A and B into textures first (TEXTURE_OPERANDS; measured
// 2-4x faster multiplies).

override TRANSPOSE_A: bool = false;
override TRANSPOSE_B: bool = false;
override TEXTURE_OPERANDS: bool = false;
override TEXTURE_WIDTH: u32 = 4096u;

struct Params {
  m: u32,
  n: u32,
  // K / 4 (K is padded to a multiple of 4).
  k_quads: u32,
  // Row strides of the stored A, B and C, in vec4.
  lda4: u32,
  ldb4: u32,
  ldc4: u32,
  a_batch4: u32,
  b_batch4: u32,
  c_batch4: u32,
  has_bias: u32,
  accumulate: u32,
  // Invocations of a workgroup side by side along N (8, 4 or 1); the rest stack along M.
  lanes_n: u32,
}

struct CopyParams {
  source_rows: u32,
  source_cols: u32,
  target_rows: u32,
  target_cols: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> c: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> bias: array<f32>;
@group(0) @binding(8) var a_texture: texture_storage_2d<rgba32float, read>;
@group(0) @binding(9) var b_texture: texture_storage_2d<rgba32float, read>;

// Used by `copy_padded` only (an entry point's bindings may share numbers with another's).
@group(0) @binding(0) var<uniform> copy_params: CopyParams;
@group(0) @binding(2) var<storage, read> copy_source: array<f32>;
@group(0) @binding(4) var<storage, read_write> copy_target: array<f32>;

const TILE_ROWS: u32 = 16u;
const TILE_COLS: u32 = 16u;

// One row of an invocation's block: 16 outputs as 4 column quads.
struct RowAcc {
  q0: vec4<f32>,
  q1: vec4<f32>,
  q2: vec4<f32>,
  q3: vec4<f32>,
}

// op(B) at one k-quad for the invocation's 4 column quads: column c of each matrix holds
// B[4 kq + c, col .. col + 3].
struct Panel {
  q0: mat4x4<f32>,
  q1: mat4x4<f32>,
  q2: mat4x4<f32>,
  q3: mat4x4<f32>,
}

// The i-th vec4 of a or b, from the texture or the buffer.
fn a_quad(i: u32) -> vec4<f32> {
  if (TEXTURE_OPERANDS) {
    return textureLoad(a_texture, vec2<u32>(i % TEXTURE_WIDTH, i / TEXTURE_WIDTH));
  }
  return a[i];
}

fn b_quad(i: u32) -> vec4<f32> {
  if (TEXTURE_OPERANDS) {
    return textureLoad(b_texture, vec2<u32>(i % TEXTURE_WIDTH, i / TEXTURE_WIDTH));
  }
  return b[i];
}

// op(A) rows row0 .. row0 + 3 (row0 a multiple of 4) at k-quad kq: column r holds
// A[row0 + r, 4 kq .. 4 kq + 3]. Rows past M repeat row M - 1 (or the last quad of rows).
fn load_a_block(base: u32, row0: u32, kq: u32) -> mat4x4<f32> {
  let lda4 = params.lda4;
  if (TRANSPOSE_A) {
    // [K, M]: one vec4 holds 4 rows at one k, so read 4 k and transpose.
    let quad = base + min(row0 / 4u, lda4 - 1u);
    let k0 = kq * 4u;
    return transpose(mat4x4<f32>(
      a_quad(quad + k0 * lda4),
      a_quad(quad + (k0 + 1u) * lda4),
      a_quad(quad + (k0 + 2u) * lda4),
      a_quad(quad + (k0 + 3u) * lda4),
    ));
  }
  let last = params.m - 1u;
  return mat4x4<f32>(
    a_quad(base + min(row0, last) * lda4 + kq),
    a_quad(base + min(row0 + 1u, last) * lda4 + kq),
    a_quad(base + min(row0 + 2u, last) * lda4 + kq),
    a_quad(base + min(row0 + 3u, last) * lda4 + kq),
  );
}

// op(B) at k-quad kq, columns col0 .. col0 + 3 (col0 a multiple of 4): column c holds
// B[4 kq + c, col0 .. col0 + 3]. Columns past N repeat column N - 1 (or the last quad).
fn load_b_block(base: u32, kq: u32, col0: u32) -> mat4x4<f32> {
  let ldb4 = params.ldb4;
  if (TRANSPOSE_B) {
    // [N, K]: one vec4 holds 4 k of one column, so read 4 columns and transpose.
    let last = params.n - 1u;
    return transpose(mat4x4<f32>(
      b_quad(base + min(col0, last) * ldb4 + kq),
      b_quad(base + min(col0 + 1u, last) * ldb4 + kq),
      b_quad(base + min(col0 + 2u, last) * ldb4 + kq),
      b_quad(base + min(col0 + 3u, last) * ldb4 + kq),
    ));
  }
  let quad = base + min(col0 / 4u, ldb4 - 1u);
  let k0 = kq * 4u;
  return mat4x4<f32>(
    b_quad(quad + k0 * ldb4),
    b_quad(quad + (k0 + 1u) * ldb4),
    b_quad(quad + (k0 + 2u) * ldb4),
    b_quad(quad + (k0 + 3u) * ldb4),
  );
}

// acc += a x panel for one row: a holds the row's 4 values of op(A) at this k-quad.
fn update_row(acc: RowAcc, a_row: vec4<f32>, p: Panel) -> RowAcc {
  return RowAcc(
    acc.q0 + p.q0 * a_row,
    acc.q1 + p.q1 * a_row,
    acc.q2 + p.q2 * a_row,
    acc.q3 + p.q3 * a_row,
  );
}

// The bias of the invocation's 16 columns (zero without a bias).
fn load_bias(col0: u32) -> RowAcc {
  var v = array<f32, 16>();
  if (params.has_bias != 0u) {
    for (var j = 0u; j < 16u; j++) {
      v[j] = bias[min(col0 + j, params.n - 1u)];
    }
  }
  return RowAcc(
    vec4<f32>(v[0], v[1], v[2], v[3]),
    vec4<f32>(v[4], v[5], v[6], v[7]),
    vec4<f32>(v[8], v[9], v[10], v[11]),
    vec4<f32>(v[12], v[13], v[14], v[15]),
  );
}

// C[row, col .. col + 3] = v (+ old C) at vec4 index `index`, unless the quad starts past N (a
// quad that straddles N is written whole: C's padded columns are scratch).
fn store_quad(index: u32, col: u32, v: vec4<f32>) {
  if (col < params.n) {
    var value = v;
    if (params.accumulate != 0u) {
      value += c[index];
    }
    c[index] = value;
  }
}

// One row of the block plus the bias, skipping rows past M.
fn store_row(c_base: u32, row: u32, col0: u32, acc: RowAcc, bias_row: RowAcc) {
  if (row >= params.m) {
    return;
  }
  let first = c_base + row * params.ldc4 + col0 / 4u;
  store_quad(first, col0, acc.q0 + bias_row.q0);
  store_quad(first + 1u, col0 + 4u, acc.q1 + bias_row.q1);
  store_quad(first + 2u, col0 + 8u, acc.q2 + bias_row.q2);
  store_quad(first + 3u, col0 + 12u, acc.q3 + bias_row.q3);
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let lanes_n = params.lanes_n;
  let row0 = (wid.y * (8u / lanes_n) + lane / lanes_n) * TILE_ROWS;
  let col0 = (wid.x * lanes_n + lane % lanes_n) * TILE_COLS;
  let a_base = wid.z * params.a_batch4;
  let b_base = wid.z * params.b_batch4;

  let zero = RowAcc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
  var r0 = zero; var r1 = zero; var r2 = zero; var r3 = zero;
  var r4 = zero; var r5 = zero; var r6 = zero; var r7 = zero;
  var r8 = zero; var r9 = zero; var r10 = zero; var r11 = zero;
  var r12 = zero; var r13 = zero; var r14 = zero; var r15 = zero;
  for (var kq = 0u; kq < params.k_quads; kq++) {
    let p = Panel(
      load_b_block(b_base, kq, col0),
      load_b_block(b_base, kq, col0 + 4u),
      load_b_block(b_base, kq, col0 + 8u),
      load_b_block(b_base, kq, col0 + 12u),
    );
    let a0 = load_a_block(a_base, row0, kq);
    r0 = update_row(r0, a0[0], p); r1 = update_row(r1, a0[1], p);
    r2 = update_row(r2, a0[2], p); r3 = update_row(r3, a0[3], p);
    let a1 = load_a_block(a_base, row0 + 4u, kq);
    r4 = update_row(r4, a1[0], p); r5 = update_row(r5, a1[1], p);
    r6 = update_row(r6, a1[2], p); r7 = update_row(r7, a1[3], p);
    let a2 = load_a_block(a_base, row0 + 8u, kq);
    r8 = update_row(r8, a2[0], p); r9 = update_row(r9, a2[1], p);
    r10 = update_row(r10, a2[2], p); r11 = update_row(r11, a2[3], p);
    let a3 = load_a_block(a_base, row0 + 12u, kq);
    r12 = update_row(r12, a3[0], p); r13 = update_row(r13, a3[1], p);
    r14 = update_row(r14, a3[2], p); r15 = update_row(r15, a3[3], p);
  }

  let c_base = wid.z * params.c_batch4;
  let bias_row = load_bias(col0);
  store_row(c_base, row0, col0, r0, bias_row);
  store_row(c_base, row0 + 1u, col0, r1, bias_row);
  store_row(c_base, row0 + 2u, col0, r2, bias_row);
  store_row(c_base, row0 + 3u, col0, r3, bias_row);
  store_row(c_base, row0 + 4u, col0, r4, bias_row);
  store_row(c_base, row0 + 5u, col0, r5, bias_row);
  store_row(c_base, row0 + 6u, col0, r6, bias_row);
  store_row(c_base, row0 + 7u, col0, r7, bias_row);
  store_row(c_base, row0 + 8u, col0, r8, bias_row);
  store_row(c_base, row0 + 9u, col0, r9, bias_row);
  store_row(c_base, row0 + 10u, col0, r10, bias_row);
  store_row(c_base, row0 + 11u, col0, r11, bias_row);
  store_row(c_base, row0 + 12u, col0, r12, bias_row);
  store_row(c_base, row0 + 13u, col0, r13, bias_row);
  store_row(c_base, row0 + 14u, col0, r14, bias_row);
  store_row(c_base, row0 + 15u, col0, r15, bias_row);
}

@compute @workgroup_size(64)
fn copy_padded(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let col = wid.x * 64u + lid;
  let p = copy_params;
  if (col >= p.target_cols) {
    return;
  }
  let z = wid.z;
  // Rows stride by the grid height, so any number of rows fits the workgroup-count limit.
  for (var row = wid.y; row < p.target_rows; row += nwg.y) {
    var v = 0.0;
    if (row < p.source_rows && col < p.source_cols) {
      v = copy_source[(z * p.source_rows + row) * p.source_cols + col];
    }
    copy_target[(z * p.target_rows + row) * p.target_cols + col] = v;
  }
}
