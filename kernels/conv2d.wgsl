// 2-D convolution, forward and both gradients, as implicit GEMMs on one tiled template, plus the
// deterministic reductions the weight and bias gradients finish with.
//
// Layouts: x NHWC [BATCH, IN_H, IN_W, IN_C]; weight HWIO [KERNEL, KERNEL, IN_C, OUT_C];
// y / dy NHWC [BATCH, OUT_H, OUT_W, OUT_C]. Square kernels, equal stride and zero padding on both
// axes. Every shape number is an `override`, so each layer gets its own pipeline and the index
// arithmetic divides by constants (a multiply and a shift) instead of by runtime values.
//
// Entry point `main`, specialised by PASS, computes C = A · B tile by tile:
//   PASS_FORWARD      y = im2col(x) · W (+ bias)
//                     M = BATCH*OUT_H*OUT_W, N = OUT_C, K = KERNEL²*IN_C (IN_C % 4 != 0:
//                     KERNEL*ROW_K, kernel rows padded to whole vec4; see ROW_PACKED)
//   PASS_INPUT_GRAD   dx = gather(dy) · Wᵀ, one stride phase per dispatch
//                     M = BATCH*PH_H*PH_W, N = IN_C, K = TAPS_H*TAPS_W*OUT_C
//   PASS_WEIGHT_GRAD  dW = im2col(x)ᵀ · dy, one K slice per grid z
//                     M = KERNEL²*IN_C, N = OUT_C, K = BATCH*OUT_H*OUT_W
// The A loader computes im2col addresses on the fly; taps outside the image read as zero, which
// is the zero padding. Nothing is materialised.
//
// Input gradient with stride s: input row h receives from kernel row kh only when
// (h + PAD - kh) is a multiple of s. Pixels are split by phase (h mod s, w mod s); within one
// phase the contributing kernel rows are fixed (kh = KH0, KH0 + s, ...) and the dy row is
// BASE_H + h/s - tap, all integer arithmetic. One dispatch per phase (PHASE_H, PHASE_W), so no
// multiply-by-zero taps are computed: stride 2 costs the same FLOPs as its forward.
//
// Weight gradient: K (the pixels) is cut into slices of SLICE_LEN (grid z); with one slice the
// tile is written (or added, ACCUMULATE) straight into dW, otherwise each slice writes its partial
// product to scratch [slices, M, N] and `reduce_slices` adds the slices in a fixed order. No
// atomics, so the result is bitwise reproducible. With LANE_SLICES (M <= 16, direct loads) the
// rows of invocations of one workgroup take consecutive slices instead of consecutive row blocks.
//
// Tiling: a workgroup of WG_X * WG_Y invocations computes a TILE_M x TILE_N block of C with
// TILE_M = 16 WG_Y, TILE_N = 16 WG_X; each invocation owns a 16 x 16 block in registers (16 rows of
// mat4x4 = 4 column quads) and per 4 steps of k reads a 16 x 4 block of A and a 4 x 16 block of B
// (16 + 16 vec4) for 1024 multiply-adds. Global memory is read in 4 x 4 blocks of vec4, transposed
// in registers where the layout runs the other way. The blocks come from one of two sources:
// - STAGED (GPUs): per TILE_K = 16 step the workgroup stages A (k-major, rows packed in vec4) and
//   B (k-major, columns packed in vec4) in workgroup memory between two barriers, and each
//   invocation reads its blocks from there.
// - direct (CPU adapters): each invocation loads its blocks straight from global memory. lavapipe
//   runs 8 invocations as the lanes of one SIMD register and turns every lane-varying load, from
//   workgroup memory as much as from a buffer, into a scalar loop over the lanes; staging then only
//   adds loads, stores and barriers (measured: 1.3x slower). Texture loads do not go through that
//   loop, so on CPU adapters the wrapper copies A and B into read-only storage textures first
//   (TEXTURE_OPERANDS; ~0.7 ns per vec4 load instead of ~2 ns; 2-4x faster passes overall).
// Loaders never branch: out-of-range elements read a valid address and are selected to zero.
//
// Bindings (all storage buffers are viewed as vec4 arrays; an element i is [i / 4][i % 4]; the
// wrapper binds whole pooled buffers, which are padded to 16 bytes):
//   1 in_a   (read)        forward, weight grad: x.  input grad: dy.  reductions: partial sums / dy
//   2 in_b   (read)        forward, input grad: weight.  weight grad: dy
//   3 bias   (read)        forward with HAS_BIAS: bias [OUT_C] (the layout always has this
//                          binding; the wrapper binds another read-only tensor when unused)
//   4 out    (read_write)  forward: y.  input grad: dx.  weight grad: dW or scratch [slices, M, N]
//   5 tex_a, 6 tex_b (`main` only) read-only rgba32float storage textures holding in_a and in_b's
//                          vec4 in order, TEXTURE_WIDTH per row; read instead of the buffers when
//                          TEXTURE_OPERANDS (the wrapper binds a placeholder texture otherwise).
//                          lavapipe loads a texel per lane in ~1/3 of the time of a buffer vec4
//                          (no per-lane scalar loop), and loads dominate the direct path.
// Dispatch of `main`: (ceil(M / TILE_M), ceil(N / TILE_N), slices) workgroups of WG_X * WG_Y;
// with LANE_SLICES (ceil(M / 16), ceil(N / TILE_N), slices / WG_Y).
//
// `bias_grad_partial`: partial[s, c] = sum of dy[m, c] over the rows of slice s (SLICE_LEN rows);
//   in_a = dy, out = partial [SLICES, OUT_C]; one invocation per (column quad, slice), 64 per
//   workgroup, grid (ceil(quads * SLICES / 64)).
// `reduce_slices`: out[i] = (ACCUMULATE ? out[i] : 0) + sum_s in_a[s * REDUCE_LEN + i], s in
//   order; in_a = partials, out = result; one invocation per quad of out, 64 per workgroup, grid
//   folded into (x, y) when large.

// ---- Tile configuration (textual substitution: it sizes the workgroup arrays) ----
const WG_X: u32 = {{WG_X}}u;
const WG_Y: u32 = {{WG_Y}}u;
const THREADS: u32 = WG_X * WG_Y;
const TILE_M: u32 = 16u * WG_Y;
const TILE_N: u32 = 16u * WG_X;
const TILE_K: u32 = 16u;
const ROW_QUADS: u32 = TILE_M / 4u;
const COL_QUADS: u32 = TILE_N / 4u;
const K_QUADS: u32 = TILE_K / 4u;

const PASS_FORWARD: u32 = 0u;
const PASS_INPUT_GRAD: u32 = 1u;
const PASS_WEIGHT_GRAD: u32 = 2u;

// ---- Shape (pipeline-overridable constants; defaults keep unused ones well defined) ----
override PASS: u32 = 0u;
override BATCH: u32 = 1u;
override IN_H: u32 = 1u;
override IN_W: u32 = 1u;
override IN_C: u32 = 1u;
override OUT_C: u32 = 1u;
override KERNEL: u32 = 1u;
override STRIDE: u32 = 1u;
override PAD: u32 = 0u;
override OUT_H: u32 = 1u;
override OUT_W: u32 = 1u;
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
// Stage A and B tiles in workgroup memory (GPUs); otherwise every invocation loads its own
// blocks straight from global memory (CPU adapters: see the header).
override STAGED: bool = true;
// Read the GEMM operands from tex_a / tex_b instead of in_a / in_b (see the bindings).
override TEXTURE_OPERANDS: bool = false;
override TEXTURE_WIDTH: u32 = 4096u;
// Weight gradient: pixels per K slice (a multiple of TILE_K); SPLIT when there is more than one.
override SLICE_LEN: u32 = 16u;
override SPLIT: bool = false;
// Weight gradient with M <= 16 and direct loads: each row of invocations (ty) takes its own K
// slice, wid.z * WG_Y + ty, over the same 16 rows, instead of rows past M that are discarded.
override LANE_SLICES: bool = false;
// Input gradient: which phase (input row mod STRIDE, column mod STRIDE) this pipeline computes.
override PHASE_H: u32 = 0u;
override PHASE_W: u32 = 0u;
// Reductions.
override SLICES: u32 = 1u;
override REDUCE_LEN: u32 = 4u;

override OUT_PIXELS: u32 = OUT_H * OUT_W;
// A 1x1 kernel without padding: every tap is inside the image and output pixel m reads input
// pixel (oh * STRIDE, ow * STRIDE) (pixel m itself at stride 1), so the loaders skip the im2col
// arithmetic and the padding tests. The input gradient's one phase grid is then dy's pixel grid.
override POINTWISE: bool = KERNEL == 1u && PAD == 0u;
// Input gradient phase geometry: pixels of the phase, first kernel tap and tap count per axis,
// and the dy row/column of the phase's pixel 0 at tap 0.
override PH_H: u32 = (IN_H + STRIDE - 1u - PHASE_H) / STRIDE;
override PH_W: u32 = (IN_W + STRIDE - 1u - PHASE_W) / STRIDE;
override KH0: u32 = (PHASE_H + PAD) % STRIDE;
override KW0: u32 = (PHASE_W + PAD) % STRIDE;
override TAPS_H: u32 = (KERNEL + STRIDE - 1u - KH0) / STRIDE;
override TAPS_W: u32 = (KERNEL + STRIDE - 1u - KW0) / STRIDE;
override BASE_H: u32 = (PHASE_H + PAD - KH0) / STRIDE;
override BASE_W: u32 = (PHASE_W + PAD - KW0) / STRIDE;

// Forward with IN_C % 4 != 0 (stems: Cin = 1 or 3): k runs over kernel rows, each padded from
// ROW_LEN = KERNEL * IN_C to ROW_K (a multiple of 4) elements whose weights read as zero. One
// kernel row's taps are ROW_LEN consecutive floats of x (KERNEL adjacent pixels of IN_C channels),
// so 4 consecutive k are 4 consecutive floats, two vec4 loads instead of four element loads, for
// (ROW_K - ROW_LEN) / ROW_LEN more multiply-adds (1/7 on the 7x7 RGB stem).
override ROW_PACKED: bool = PASS == PASS_FORWARD && IN_C % 4u != 0u;
override ROW_LEN: u32 = KERNEL * IN_C;
override ROW_K: u32 = (ROW_LEN + 3u) / 4u * 4u;

// GEMM extents for this PASS.
override GEMM_M: u32 = select(
  select(BATCH * OUT_H * OUT_W, BATCH * PH_H * PH_W, PASS == PASS_INPUT_GRAD),
  KERNEL * KERNEL * IN_C,
  PASS == PASS_WEIGHT_GRAD,
);
override GEMM_N: u32 = select(OUT_C, IN_C, PASS == PASS_INPUT_GRAD);
override GEMM_K: u32 = select(
  select(
    select(KERNEL * KERNEL * IN_C, KERNEL * ROW_K, ROW_PACKED),
    TAPS_H * TAPS_W * OUT_C,
    PASS == PASS_INPUT_GRAD,
  ),
  BATCH * OUT_H * OUT_W,
  PASS == PASS_WEIGHT_GRAD,
);

@group(0) @binding(1) var<storage, read> in_a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> in_b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var tex_a: texture_storage_2d<rgba32float, read>;
@group(0) @binding(6) var tex_b: texture_storage_2d<rgba32float, read>;

// tile_a[kk * ROW_QUADS + q] = A[m0 + 4q .. m0 + 4q + 3, k0 + kk]
var<workgroup> tile_a: array<vec4<f32>, TILE_K * ROW_QUADS>;
// tile_b[kk * COL_QUADS + q] = B[k0 + kk, n0 + 4q .. n0 + 4q + 3]
var<workgroup> tile_b: array<vec4<f32>, TILE_K * COL_QUADS>;

// The invocation's 16 x 16 block: acc[r][q] = C[row0 + r, col0 + 4q .. col0 + 4q + 3]. Only ever
// indexed with constants, so it lives in registers.
var<private> acc: array<mat4x4<f32>, 16>;

// Direct loads (HOISTED_ROWS): what the A loader needs of each of the invocation's 16 rows,
// computed once before the k loop. Decomposing a row into (image, pixel) divides by the output
// geometry (not powers of two: a multiply-high and shifts per lane each); in the loop lavapipe
// redid that for all 16 rows every 4 k (~15% of the forward loop's instructions, measured).
// Only indexed by constants, so it stays in registers (or spill slots, not per-lane memory).
struct RowAddress {
  // Index in A of the row's element at k = 0 (tap (0, 0), channel 0): may be negative or past
  // the end for windows that start in the padding; such taps are masked by h, w.
  base: i32,
  // Forward: input row / column of tap (0, 0); input grad: dy row / column of tap 0.
  h: i32,
  w: i32,
}

var<private> a_rows: array<RowAddress, 16>;

// The A loader reads rows through a_rows: direct loads of the forward and input gradient with
// whole-vec4 channels (the stems' row-packed and element loaders keep the per-k arithmetic),
// except where the rows' images are tiny powers of two (<= 4 wide): their split is a few shifts,
// and keeping 16 row addresses alive through the loop cost more than it saved. Hot-loop
// instructions per k quad, per-k split -> hoisted: 28x28 forward 5548 -> 5062, 32x32 forward
// 5282 -> 5068, 8x8 forward 5171 -> 5060, but 4x4 forward 4978 -> 5067 and 4x4 dX 4962 -> 5085.
override ROW_PIXELS: u32 = select(OUT_PIXELS, PH_H * PH_W, PASS == PASS_INPUT_GRAD);
override ROW_WIDTH: u32 = select(OUT_W, PH_W, PASS == PASS_INPUT_GRAD);
override ROW_SPLIT_DIVIDES: bool = (ROW_PIXELS & (ROW_PIXELS - 1u)) != 0u ||
  (ROW_WIDTH & (ROW_WIDTH - 1u)) != 0u;
override HOISTED_ROWS: bool = !STAGED && (ROW_SPLIT_DIVIDES || ROW_WIDTH > 4u) &&
  !(POINTWISE && STRIDE == 1u) && (
    (PASS == PASS_FORWARD && IN_C % 4u == 0u) || (PASS == PASS_INPUT_GRAD && OUT_C % 4u == 0u)
  );

// Loaders are branch-free: an out-of-range element reads index 0 (always valid) and is then
// replaced by zero. On a SIMD CPU adapter a divergent `if` or early return costs mask bookkeeping
// on every load, and on a GPU it costs divergence; a select costs neither.

// The q-th vec4 of operand A or B, from the texture or the buffer.
fn vec4_a(q: u32) -> vec4<f32> {
  if (TEXTURE_OPERANDS) {
    return textureLoad(tex_a, vec2<u32>(q % TEXTURE_WIDTH, q / TEXTURE_WIDTH));
  }
  return in_a[q];
}

fn vec4_b(q: u32) -> vec4<f32> {
  if (TEXTURE_OPERANDS) {
    return textureLoad(tex_b, vec2<u32>(q % TEXTURE_WIDTH, q / TEXTURE_WIDTH));
  }
  return in_b[q];
}

fn element_a(i: u32, valid: bool) -> f32 {
  let v = vec4_a(select(0u, i, valid) / 4u)[i % 4u];
  return select(0.0, v, valid);
}

fn element_b(i: u32, valid: bool) -> f32 {
  let v = vec4_b(select(0u, i, valid) / 4u)[i % 4u];
  return select(0.0, v, valid);
}

fn quad_a(i: u32, valid: bool) -> vec4<f32> {
  return select(vec4<f32>(0.0), vec4_a(select(0u, i, valid) / 4u), valid);
}

fn quad_b(i: u32, valid: bool) -> vec4<f32> {
  return select(vec4<f32>(0.0), vec4_b(select(0u, i, valid) / 4u), valid);
}

// Whether 0 <= v < limit for a signed coordinate.
fn inside(v: i32, limit: u32) -> bool {
  return (v >= 0) & (v < i32(limit));
}

// ---- Forward loaders ----

// POINTWISE: index in x of channel 0 of the input pixel that output pixel m reads.
fn pointwise_x_offset(m: u32) -> u32 {
  if (STRIDE == 1u) {
    return m * IN_C;
  }
  let n = m / OUT_PIXELS;
  let p = m % OUT_PIXELS;
  return ((n * IN_H + (p / OUT_W) * STRIDE) * IN_W + (p % OUT_W) * STRIDE) * IN_C;
}

// x at output pixel m, for the 4 consecutive k = (kh, kw, ci) starting at k (a multiple of 4).
fn forward_a(m: u32, k: u32) -> vec4<f32> {
  let n = m / OUT_PIXELS;
  let p = m % OUT_PIXELS;
  let ih0 = i32((p / OUT_W) * STRIDE) - i32(PAD);
  let iw0 = i32((p % OUT_W) * STRIDE) - i32(PAD);
  let row_valid = m < GEMM_M;
  if (POINTWISE && IN_C % 4u == 0u) {
    return quad_a(pointwise_x_offset(m) + k, row_valid & (k < GEMM_K));
  }
  if (IN_C % 4u == 0u) {
    // The 4 channels share one tap and are one aligned vec4.
    let tap = k / IN_C;
    let ih = ih0 + i32(tap / KERNEL);
    let iw = iw0 + i32(tap % KERNEL);
    let valid = row_valid & (k < GEMM_K) & inside(ih, IN_H) & inside(iw, IN_W);
    return quad_a(((n * IN_H + u32(ih)) * IN_W + u32(iw)) * IN_C + k % IN_C, valid);
  }
  // ROW_PACKED: k = (kh, r), elements r .. r + 3 of kernel row kh are x's floats from `first`.
  let kh = k / ROW_K;
  let r = k % ROW_K;
  let ih = ih0 + i32(kh);
  let row_ok = row_valid & (k < GEMM_K) & inside(ih, IN_H);
  let first = ((i32(n * IN_H) + ih) * i32(IN_W) + iw0) * i32(IN_C) + i32(r);
  var valid = vec4<bool>();
  for (var j = 0u; j < 4u; j++) {
    let iw = iw0 + i32((r + j) / IN_C);
    valid[j] = row_ok & (r + j < ROW_LEN) & inside(iw, IN_W);
  }
  return select(vec4<f32>(0.0), unaligned_quad_a(first, row_ok), valid);
}

// A's floats a .. a + 3 for a float index a that need not be a multiple of 4 and may be negative
// (the floats outside x are garbage, for the caller to mask): the two vec4 that hold them, shifted
// by a mod 4 with selects (branch-free). `ok` false reads vec4 0 and 1.
fn unaligned_quad_a(a: i32, ok: bool) -> vec4<f32> {
  let q = select(0, a >> 2u, ok); // floor(a / 4), also for negative a
  let lo = vec4_a(u32(max(q, 0)));
  let hi = vec4_a(u32(q + 1));
  let shift = a & 3;
  var v = lo;
  v = select(v, vec4<f32>(lo.yzw, hi.x), shift == 1);
  v = select(v, vec4<f32>(lo.zw, hi.xy), shift == 2);
  v = select(v, vec4<f32>(lo.w, hi.xyz), shift == 3);
  return v;
}

// x at image n for the tap index kc = (kh, kw, ci), relative to the window corner (ih0, iw0);
// zero when `valid` is false or the tap falls in the padding.
fn x_tap_element(n: u32, ih0: i32, iw0: i32, kc: u32, valid: bool) -> f32 {
  let tap = kc / IN_C;
  let ih = ih0 + i32(tap / KERNEL);
  let iw = iw0 + i32(tap % KERNEL);
  let index = ((n * IN_H + u32(ih)) * IN_W + u32(iw)) * IN_C + kc % IN_C;
  return element_a(index, valid & inside(ih, IN_H) & inside(iw, IN_W));
}

// ---- Input-gradient loaders (one phase) ----

// dy for phase pixel m at the 4 consecutive k = (tap_h, tap_w, co) starting at k.
fn input_grad_a(m: u32, k: u32) -> vec4<f32> {
  let n = m / (PH_H * PH_W);
  let p = m % (PH_H * PH_W);
  let oh0 = i32(BASE_H + p / PH_W);
  let ow0 = i32(BASE_W + p % PH_W);
  let row_valid = m < GEMM_M;
  if (POINTWISE && OUT_C % 4u == 0u) {
    // dy is A itself, row-major [M, OUT_C].
    return quad_a(m * OUT_C + k, row_valid & (k < GEMM_K));
  }
  if (OUT_C % 4u == 0u) {
    let tap = k / OUT_C;
    let oh = oh0 - i32(tap / TAPS_W);
    let ow = ow0 - i32(tap % TAPS_W);
    let valid = row_valid & (k < GEMM_K) & inside(oh, OUT_H) & inside(ow, OUT_W);
    return quad_a(((n * OUT_H + u32(oh)) * OUT_W + u32(ow)) * OUT_C + k % OUT_C, valid);
  }
  return vec4<f32>(
    dy_tap_element(n, oh0, ow0, k, row_valid & (k < GEMM_K)),
    dy_tap_element(n, oh0, ow0, k + 1u, row_valid & (k + 1u < GEMM_K)),
    dy_tap_element(n, oh0, ow0, k + 2u, row_valid & (k + 2u < GEMM_K)),
    dy_tap_element(n, oh0, ow0, k + 3u, row_valid & (k + 3u < GEMM_K)),
  );
}

// dy at image n for k = (tap_h, tap_w, co) of the phase, relative to (oh0, ow0).
fn dy_tap_element(n: u32, oh0: i32, ow0: i32, k: u32, valid: bool) -> f32 {
  let tap = k / OUT_C;
  let oh = oh0 - i32(tap / TAPS_W);
  let ow = ow0 - i32(tap % TAPS_W);
  let index = ((n * OUT_H + u32(oh)) * OUT_W + u32(ow)) * OUT_C + k % OUT_C;
  return element_a(index, valid & inside(oh, OUT_H) & inside(ow, OUT_W));
}

// Index in W of (phase tap, ci, co) for k = (tap_h, tap_w, co).
fn input_grad_weight_index(k: u32, ci: u32) -> u32 {
  let tap = k / OUT_C;
  let kh = KH0 + STRIDE * (tap / TAPS_W);
  let kw = KW0 + STRIDE * (tap % TAPS_W);
  return ((kh * KERNEL + kw) * IN_C + ci) * OUT_C + k % OUT_C;
}

// Wᵀ for input channel ci at the 4 consecutive k starting at k (4 output channels of one tap).
fn input_grad_b(k: u32, ci: u32) -> vec4<f32> {
  let column_valid = ci < IN_C;
  if (OUT_C % 4u == 0u) {
    return quad_b(input_grad_weight_index(k, ci), column_valid & (k < GEMM_K));
  }
  return vec4<f32>(
    element_b(input_grad_weight_index(k, ci), column_valid & (k < GEMM_K)),
    element_b(input_grad_weight_index(k + 1u, ci), column_valid & (k + 1u < GEMM_K)),
    element_b(input_grad_weight_index(k + 2u, ci), column_valid & (k + 2u < GEMM_K)),
    element_b(input_grad_weight_index(k + 3u, ci), column_valid & (k + 3u < GEMM_K)),
  );
}

// ---- Weight-gradient loader (A; B is dy, read like the forward's B) ----

// x for the 4 consecutive rows m = (kh, kw, ci) starting at m, at pixel k (k < k_end).
fn weight_grad_a(m: u32, k: u32, k_end: u32) -> vec4<f32> {
  let n = k / OUT_PIXELS;
  let p = k % OUT_PIXELS;
  let ih0 = i32((p / OUT_W) * STRIDE) - i32(PAD);
  let iw0 = i32((p % OUT_W) * STRIDE) - i32(PAD);
  let pixel_valid = k < k_end;
  if (POINTWISE && IN_C % 4u == 0u) {
    return quad_a(pointwise_x_offset(k) + m, pixel_valid & (m < GEMM_M));
  }
  if (IN_C % 4u == 0u) {
    let tap = m / IN_C;
    let ih = ih0 + i32(tap / KERNEL);
    let iw = iw0 + i32(tap % KERNEL);
    let valid = pixel_valid & (m < GEMM_M) & inside(ih, IN_H) & inside(iw, IN_W);
    return quad_a(((n * IN_H + u32(ih)) * IN_W + u32(iw)) * IN_C + m % IN_C, valid);
  }
  return vec4<f32>(
    x_tap_element(n, ih0, iw0, m, pixel_valid & (m < GEMM_M)),
    x_tap_element(n, ih0, iw0, m + 1u, pixel_valid & (m + 1u < GEMM_M)),
    x_tap_element(n, ih0, iw0, m + 2u, pixel_valid & (m + 2u < GEMM_M)),
    x_tap_element(n, ih0, iw0, m + 3u, pixel_valid & (m + 3u < GEMM_M)),
  );
}

// Row k (< k_end) of a row-major [*, GEMM_N] matrix in in_b, columns c .. c + 3.
fn row_major_b(k: u32, c: u32, k_end: u32) -> vec4<f32> {
  return matrix_row_b(k, k < k_end, c);
}

// ROW_PACKED forward: the weight row of k = (kh, r), zero in a kernel row's padding (r >= ROW_LEN).
fn packed_weight_b(k: u32, c: u32) -> vec4<f32> {
  let r = k % ROW_K;
  return matrix_row_b((k / ROW_K) * ROW_LEN + r, (r < ROW_LEN) & (k < GEMM_K), c);
}

// Row `row` of a row-major [*, GEMM_N] matrix in in_b, columns c .. c + 3; zero unless row_valid.
fn matrix_row_b(row: u32, row_valid: bool, c: u32) -> vec4<f32> {
  let first = row * GEMM_N + c;
  if (GEMM_N % 4u == 0u) {
    return quad_b(first, row_valid & (c < GEMM_N));
  }
  return vec4<f32>(
    element_b(first, row_valid & (c < GEMM_N)),
    element_b(first + 1u, row_valid & (c + 1u < GEMM_N)),
    element_b(first + 2u, row_valid & (c + 2u < GEMM_N)),
    element_b(first + 3u, row_valid & (c + 3u < GEMM_N)),
  );
}

// ---- Hoisted row addresses (HOISTED_ROWS) ----

// The RowAddress of GEMM row m (forward: output pixel; input grad: phase pixel). Rows past M
// read row M - 1 (their results are never stored), so the loads need no row test.
fn row_address(row: u32) -> RowAddress {
  let m = min(row, GEMM_M - 1u);
  if (PASS == PASS_FORWARD) {
    if (POINTWISE) {
      return RowAddress(i32(pointwise_x_offset(m)), 0, 0);
    }
    let n = m / OUT_PIXELS;
    let p = m % OUT_PIXELS;
    let h = i32((p / OUT_W) * STRIDE) - i32(PAD);
    let w = i32((p % OUT_W) * STRIDE) - i32(PAD);
    return RowAddress(((i32(n * IN_H) + h) * i32(IN_W) + w) * i32(IN_C), h, w);
  }
  if (POINTWISE) {
    return RowAddress(i32(m * OUT_C), 0, 0);
  }
  let n = m / (PH_H * PH_W);
  let p = m % (PH_H * PH_W);
  let h = i32(BASE_H + p / PH_W);
  let w = i32(BASE_W + p % PH_W);
  return RowAddress(((i32(n * OUT_H) + h) * i32(OUT_W) + w) * i32(OUT_C), h, w);
}

// What a k quad adds to every row's address: the index offset of its tap and channels, and the
// tap's row / column offsets (forward: + (kh, kw); input grad: - (tap_h, tap_w)). K is a whole
// number of vec4 here and the loop stops at K, so every k quad is inside K.
struct KAddress {
  offset: i32,
  dh: i32,
  dw: i32,
}

fn k_address(k: u32) -> KAddress {
  if (POINTWISE) {
    return KAddress(i32(k), 0, 0);
  }
  if (PASS == PASS_FORWARD) {
    let tap = k / IN_C;
    let dh = i32(tap / KERNEL);
    let dw = i32(tap % KERNEL);
    return KAddress((dh * i32(IN_W) + dw) * i32(IN_C) + i32(k % IN_C), dh, dw);
  }
  let tap = k / OUT_C;
  let dh = -i32(tap / TAPS_W);
  let dw = -i32(tap % TAPS_W);
  return KAddress((dh * i32(OUT_W) + dw) * i32(OUT_C) + i32(k % OUT_C), dh, dw);
}

// A[row, k .. k + 3] from a row's and a k quad's addresses (zero in the padding).
fn hoisted_a(row: RowAddress, ka: KAddress) -> vec4<f32> {
  let index = u32(row.base + ka.offset);
  if (POINTWISE) {
    return vec4_a(index / 4u);
  }
  var limit_h = IN_H;
  var limit_w = IN_W;
  if (PASS == PASS_INPUT_GRAD) {
    limit_h = OUT_H;
    limit_w = OUT_W;
  }
  // One unsigned compare per axis: a negative coordinate wraps past the limit.
  let valid = (u32(row.h + ka.dh) < limit_h) & (u32(row.w + ka.dw) < limit_w);
  return quad_a(index, valid);
}

// load_a_block for rows 4u .. 4u + 3 of the invocation's block, through a_rows.
fn hoisted_a_block(u: u32, ka: KAddress) -> mat4x4<f32> {
  switch u {
    case 0u: {
      return mat4x4<f32>(
        hoisted_a(a_rows[0], ka), hoisted_a(a_rows[1], ka),
        hoisted_a(a_rows[2], ka), hoisted_a(a_rows[3], ka),
      );
    }
    case 1u: {
      return mat4x4<f32>(
        hoisted_a(a_rows[4], ka), hoisted_a(a_rows[5], ka),
        hoisted_a(a_rows[6], ka), hoisted_a(a_rows[7], ka),
      );
    }
    case 2u: {
      return mat4x4<f32>(
        hoisted_a(a_rows[8], ka), hoisted_a(a_rows[9], ka),
        hoisted_a(a_rows[10], ka), hoisted_a(a_rows[11], ka),
      );
    }
    default: {
      return mat4x4<f32>(
        hoisted_a(a_rows[12], ka), hoisted_a(a_rows[13], ka),
        hoisted_a(a_rows[14], ka), hoisted_a(a_rows[15], ka),
      );
    }
  }
}

// Fill a_rows for rows row0 .. row0 + 15 (written out: constant indices keep it in registers).
fn hoist_rows(row0: u32) {
  a_rows[0] = row_address(row0);
  a_rows[1] = row_address(row0 + 1u);
  a_rows[2] = row_address(row0 + 2u);
  a_rows[3] = row_address(row0 + 3u);
  a_rows[4] = row_address(row0 + 4u);
  a_rows[5] = row_address(row0 + 5u);
  a_rows[6] = row_address(row0 + 6u);
  a_rows[7] = row_address(row0 + 7u);
  a_rows[8] = row_address(row0 + 8u);
  a_rows[9] = row_address(row0 + 9u);
  a_rows[10] = row_address(row0 + 10u);
  a_rows[11] = row_address(row0 + 11u);
  a_rows[12] = row_address(row0 + 12u);
  a_rows[13] = row_address(row0 + 13u);
  a_rows[14] = row_address(row0 + 14u);
  a_rows[15] = row_address(row0 + 15u);
}

// ---- 4 x 4 blocks of A and B, whatever the pass ----

// A[m .. m + 3, k .. k + 3] as a matrix whose column j is row m + j over the 4 k (m, k multiples
// of 4). Where global memory runs along m (weight grad) the loads come per k and are transposed;
// transposes are free (register renaming).
fn load_a_block(m: u32, k: u32, k_end: u32) -> mat4x4<f32> {
  if (PASS == PASS_FORWARD) {
    return mat4x4<f32>(
      forward_a(m, k),
      forward_a(m + 1u, k),
      forward_a(m + 2u, k),
      forward_a(m + 3u, k),
    );
  }
  if (PASS == PASS_INPUT_GRAD) {
    return mat4x4<f32>(
      input_grad_a(m, k),
      input_grad_a(m + 1u, k),
      input_grad_a(m + 2u, k),
      input_grad_a(m + 3u, k),
    );
  }
  return transpose(mat4x4<f32>(
    weight_grad_a(m, k, k_end),
    weight_grad_a(m, k + 1u, k_end),
    weight_grad_a(m, k + 2u, k_end),
    weight_grad_a(m, k + 3u, k_end),
  ));
}

// B[k .. k + 3, c .. c + 3] as a matrix whose column j is row k + j over the 4 columns.
fn load_b_block(k: u32, c: u32, k_end: u32) -> mat4x4<f32> {
  if (PASS == PASS_INPUT_GRAD) {
    // Wᵀ runs along k (output channels): load per column, transpose.
    return transpose(mat4x4<f32>(
      input_grad_b(k, c),
      input_grad_b(k, c + 1u),
      input_grad_b(k, c + 2u),
      input_grad_b(k, c + 3u),
    ));
  }
  if (ROW_PACKED) {
    return mat4x4<f32>(
      packed_weight_b(k, c),
      packed_weight_b(k + 1u, c),
      packed_weight_b(k + 2u, c),
      packed_weight_b(k + 3u, c),
    );
  }
  // Forward: W is row-major [K, OUT_C]; weight grad: dy is row-major [pixels, OUT_C].
  return mat4x4<f32>(
    row_major_b(k, c, k_end),
    row_major_b(k + 1u, c, k_end),
    row_major_b(k + 2u, c, k_end),
    row_major_b(k + 3u, c, k_end),
  );
}

// ---- Register-blocked multiply ----

// B at 4 consecutive k for the invocation's 16 columns: k0 .. k3 hold one row each (4 quads).
struct BRows {
  k0: mat4x4<f32>,
  k1: mat4x4<f32>,
  k2: mat4x4<f32>,
  k3: mat4x4<f32>,
}

// Four column quads (each: column j = row k + j) regrouped as the 4 rows.
fn b_rows(q0: mat4x4<f32>, q1: mat4x4<f32>, q2: mat4x4<f32>, q3: mat4x4<f32>) -> BRows {
  return BRows(
    mat4x4<f32>(q0[0], q1[0], q2[0], q3[0]),
    mat4x4<f32>(q0[1], q1[1], q2[1], q3[1]),
    mat4x4<f32>(q0[2], q1[2], q2[2], q3[2]),
    mat4x4<f32>(q0[3], q1[3], q2[3], q3[3]),
  );
}

// acc rows 4u .. 4u + 3 += (A rows of the block `a`, column j = row 4u + j over 4 k) · b.
// Written out per u so `acc` is only indexed by constants and stays in registers.
fn update_rows(u: u32, a: mat4x4<f32>, b: BRows) {
  switch u {
    case 0u: {
      acc[0] += b.k0 * a[0].x + b.k1 * a[0].y + b.k2 * a[0].z + b.k3 * a[0].w;
      acc[1] += b.k0 * a[1].x + b.k1 * a[1].y + b.k2 * a[1].z + b.k3 * a[1].w;
      acc[2] += b.k0 * a[2].x + b.k1 * a[2].y + b.k2 * a[2].z + b.k3 * a[2].w;
      acc[3] += b.k0 * a[3].x + b.k1 * a[3].y + b.k2 * a[3].z + b.k3 * a[3].w;
    }
    case 1u: {
      acc[4] += b.k0 * a[0].x + b.k1 * a[0].y + b.k2 * a[0].z + b.k3 * a[0].w;
      acc[5] += b.k0 * a[1].x + b.k1 * a[1].y + b.k2 * a[1].z + b.k3 * a[1].w;
      acc[6] += b.k0 * a[2].x + b.k1 * a[2].y + b.k2 * a[2].z + b.k3 * a[2].w;
      acc[7] += b.k0 * a[3].x + b.k1 * a[3].y + b.k2 * a[3].z + b.k3 * a[3].w;
    }
    case 2u: {
      acc[8] += b.k0 * a[0].x + b.k1 * a[0].y + b.k2 * a[0].z + b.k3 * a[0].w;
      acc[9] += b.k0 * a[1].x + b.k1 * a[1].y + b.k2 * a[1].z + b.k3 * a[1].w;
      acc[10] += b.k0 * a[2].x + b.k1 * a[2].y + b.k2 * a[2].z + b.k3 * a[2].w;
      acc[11] += b.k0 * a[3].x + b.k1 * a[3].y + b.k2 * a[3].z + b.k3 * a[3].w;
    }
    default: {
      acc[12] += b.k0 * a[0].x + b.k1 * a[0].y + b.k2 * a[0].z + b.k3 * a[0].w;
      acc[13] += b.k0 * a[1].x + b.k1 * a[1].y + b.k2 * a[1].z + b.k3 * a[1].w;
      acc[14] += b.k0 * a[2].x + b.k1 * a[2].y + b.k2 * a[2].z + b.k3 * a[2].w;
      acc[15] += b.k0 * a[3].x + b.k1 * a[3].y + b.k2 * a[3].z + b.k3 * a[3].w;
    }
  }
}

// ---- Source 1 (STAGED, for GPUs): tiles in workgroup memory ----

// Fill tile_a and tile_b for k0 .. k0 + TILE_K (values at k >= k_end are zero), one 4 x 4 block
// (4 vec4 loads, 4 vec4 stores) at a time.
fn stage(m0: u32, n0: u32, k0: u32, k_end: u32, lid: u32) {
  for (var e = lid; e < ROW_QUADS * K_QUADS; e += THREADS) {
    let q = e % ROW_QUADS;
    let kq = e / ROW_QUADS;
    // Column j of the transpose is A at k0 + 4 kq + j over the 4 rows.
    let block = transpose(load_a_block(m0 + 4u * q, k0 + 4u * kq, k_end));
    let dst = 4u * kq * ROW_QUADS + q;
    tile_a[dst] = block[0];
    tile_a[dst + ROW_QUADS] = block[1];
    tile_a[dst + 2u * ROW_QUADS] = block[2];
    tile_a[dst + 3u * ROW_QUADS] = block[3];
  }
  for (var e = lid; e < COL_QUADS * K_QUADS; e += THREADS) {
    let q = e % COL_QUADS;
    let kq = e / COL_QUADS;
    let block = load_b_block(k0 + 4u * kq, n0 + 4u * q, k_end);
    let dst = 4u * kq * COL_QUADS + q;
    tile_b[dst] = block[0];
    tile_b[dst + COL_QUADS] = block[1];
    tile_b[dst + 2u * COL_QUADS] = block[2];
    tile_b[dst + 3u * COL_QUADS] = block[3];
  }
}

// acc += the staged tiles' product for the invocation's 16 x 16 block, 4 k at a time: 4 vec4 of
// A and 4 of B per k for 256 multiply-adds.
fn multiply_staged(tx: u32, ty: u32) {
  for (var kq = 0u; kq < K_QUADS; kq++) {
    let b_at = 4u * kq * COL_QUADS + 4u * tx;
    let b = BRows(
      tile_b_row(b_at),
      tile_b_row(b_at + COL_QUADS),
      tile_b_row(b_at + 2u * COL_QUADS),
      tile_b_row(b_at + 3u * COL_QUADS),
    );
    let a_at = 4u * kq * ROW_QUADS + 4u * ty;
    update_rows(0u, tile_a_block(a_at), b);
    update_rows(1u, tile_a_block(a_at + 1u), b);
    update_rows(2u, tile_a_block(a_at + 2u), b);
    update_rows(3u, tile_a_block(a_at + 3u), b);
  }
}

// 16 columns of one staged B row.
fn tile_b_row(at: u32) -> mat4x4<f32> {
  return mat4x4<f32>(tile_b[at], tile_b[at + 1u], tile_b[at + 2u], tile_b[at + 3u]);
}

// One quad of rows over 4 staged k, as load_a_block returns it (column j = row j over the k).
fn tile_a_block(at: u32) -> mat4x4<f32> {
  return transpose(mat4x4<f32>(
    tile_a[at],
    tile_a[at + ROW_QUADS],
    tile_a[at + 2u * ROW_QUADS],
    tile_a[at + 3u * ROW_QUADS],
  ));
}

// ---- Source 2 (direct, for CPU adapters): each invocation loads its own blocks ----

// acc += A[row0 .. row0 + 15, k .. k + 3] · B[k .. k + 3, col0 .. col0 + 15], loaded straight from
// global memory: the same 16 + 16 vec4 loads as the staged path, without staging them first.
fn multiply_direct(row0: u32, col0: u32, k: u32, k_end: u32) {
  // Column quads past a narrow N (N <= 12; a stem's input gradient has N = 1 or 3) are zero: skip
  // their loads.
  var q1 = mat4x4<f32>();
  var q2 = mat4x4<f32>();
  var q3 = mat4x4<f32>();
  if (GEMM_N > 4u) {
    q1 = load_b_block(k, col0 + 4u, k_end);
  }
  if (GEMM_N > 8u) {
    q2 = load_b_block(k, col0 + 8u, k_end);
  }
  if (GEMM_N > 12u) {
    q3 = load_b_block(k, col0 + 12u, k_end);
  }
  let b = b_rows(load_b_block(k, col0, k_end), q1, q2, q3);
  if (HOISTED_ROWS) {
    let ka = k_address(k);
    update_rows(0u, hoisted_a_block(0u, ka), b);
    update_rows(1u, hoisted_a_block(1u, ka), b);
    update_rows(2u, hoisted_a_block(2u, ka), b);
    update_rows(3u, hoisted_a_block(3u, ka), b);
    return;
  }
  update_rows(0u, load_a_block(row0, k, k_end), b);
  update_rows(1u, load_a_block(row0 + 4u, k, k_end), b);
  update_rows(2u, load_a_block(row0 + 8u, k, k_end), b);
  update_rows(3u, load_a_block(row0 + 12u, k, k_end), b);
}

// ---- Epilogue ----

// out[base + col .. base + col + 3] (= or +=) v, for the columns below n_cols.
fn store_quad(base: u32, col: u32, n_cols: u32, v: vec4<f32>, add: bool) {
  if (col >= n_cols) {
    return;
  }
  if (n_cols % 4u == 0u) {
    let i = (base + col) / 4u;
    if (add) {
      out[i] += v;
    } else {
      out[i] = v;
    }
    return;
  }
  for (var j = 0u; j < 4u; j++) {
    if (col + j < n_cols) {
      let i = base + col + j;
      if (add) {
        out[i / 4u][i % 4u] += v[j];
      } else {
        out[i / 4u][i % 4u] = v[j];
      }
    }
  }
}

fn bias_quad(col: u32) -> vec4<f32> {
  if (!HAS_BIAS || col >= OUT_C) {
    return vec4<f32>(0.0);
  }
  if (OUT_C % 4u == 0u) {
    return bias[col / 4u];
  }
  var v = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) {
    if (col + j < OUT_C) {
      v[j] = bias[(col + j) / 4u][(col + j) % 4u];
    }
  }
  return v;
}

// Write row `row` of C (16 columns from col0) wherever this PASS puts it.
fn write_row(row: u32, col0: u32, slice: u32, r: mat4x4<f32>) {
  if (row >= GEMM_M) {
    return;
  }
  var base: u32;
  var add = false;
  if (PASS == PASS_FORWARD) {
    base = row * OUT_C;
  } else if (PASS == PASS_INPUT_GRAD) {
    let n = row / (PH_H * PH_W);
    let p = row % (PH_H * PH_W);
    let h = PHASE_H + STRIDE * (p / PH_W);
    let w = PHASE_W + STRIDE * (p % PH_W);
    base = ((n * IN_H + h) * IN_W + w) * IN_C;
  } else {
    base = (slice * GEMM_M + row) * OUT_C;
    add = ACCUMULATE && !SPLIT;
  }
  if (PASS == PASS_FORWARD && HAS_BIAS) {
    store_quad(base, col0, GEMM_N, r[0] + bias_quad(col0), add);
    store_quad(base, col0 + 4u, GEMM_N, r[1] + bias_quad(col0 + 4u), add);
    store_quad(base, col0 + 8u, GEMM_N, r[2] + bias_quad(col0 + 8u), add);
    store_quad(base, col0 + 12u, GEMM_N, r[3] + bias_quad(col0 + 12u), add);
  } else {
    store_quad(base, col0, GEMM_N, r[0], add);
    store_quad(base, col0 + 4u, GEMM_N, r[1], add);
    store_quad(base, col0 + 8u, GEMM_N, r[2], add);
    store_quad(base, col0 + 12u, GEMM_N, r[3], add);
  }
}

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let m0 = wid.x * TILE_M;
  let n0 = wid.y * TILE_N;
  let tx = lid % WG_X;
  let ty = lid / WG_X;
  var slice = wid.z;
  var row0 = m0 + 16u * ty;
  if (LANE_SLICES) {
    slice = wid.z * WG_Y + ty;
    row0 = 16u * wid.x;
  }
  var k_begin = 0u;
  var k_end = GEMM_K;
  if (PASS == PASS_WEIGHT_GRAD) {
    k_begin = slice * SLICE_LEN;
    k_end = min(GEMM_K, k_begin + SLICE_LEN);
  }
  let col0 = n0 + 16u * tx;
  if (STAGED) {
    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
      workgroupBarrier();
      stage(m0, n0, k0, k_end, lid);
      workgroupBarrier();
      multiply_staged(tx, ty);
    }
  } else {
    if (HOISTED_ROWS) {
      hoist_rows(row0);
    }
    for (var k = k_begin; k < k_end; k += 4u) {
      multiply_direct(row0, col0, k, k_end);
    }
  }
  // A loop with one copy of the store code compiles far faster than 16 inlined copies.
  for (var r = 0u; r < 16u; r++) {
    write_row(row0 + r, col0, slice, acc_row(r));
  }
}

// acc[r] for a runtime r (acc itself is only indexed by constants, so it stays in registers).
fn acc_row(r: u32) -> mat4x4<f32> {
  switch r {
    case 0u: { return acc[0]; }
    case 1u: { return acc[1]; }
    case 2u: { return acc[2]; }
    case 3u: { return acc[3]; }
    case 4u: { return acc[4]; }
    case 5u: { return acc[5]; }
    case 6u: { return acc[6]; }
    case 7u: { return acc[7]; }
    case 8u: { return acc[8]; }
    case 9u: { return acc[9]; }
    case 10u: { return acc[10]; }
    case 11u: { return acc[11]; }
    case 12u: { return acc[12]; }
    case 13u: { return acc[13]; }
    case 14u: { return acc[14]; }
    default: { return acc[15]; }
  }
}

// ---- Bias gradient and slice reduction ----

@compute @workgroup_size(64)
fn bias_grad_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
  let quads = (OUT_C + 3u) / 4u;
  if (gid.x >= quads * SLICES) {
    return;
  }
  let c = 4u * (gid.x % quads);
  let slice = gid.x / quads;
  let rows = BATCH * OUT_H * OUT_W;
  let first = slice * SLICE_LEN;
  let last = min(rows, first + SLICE_LEN);
  var sum = vec4<f32>(0.0);
  for (var m = first; m < last; m++) {
    if (OUT_C % 4u == 0u) {
      sum += in_a[(m * OUT_C + c) / 4u];
    } else {
      for (var j = 0u; j < 4u; j++) {
        if (c + j < OUT_C) {
          let i = m * OUT_C + c + j;
          sum[j] += in_a[i / 4u][i % 4u];
        }
      }
    }
  }
  store_quad(slice * OUT_C, c, OUT_C, sum, false);
}

@compute @workgroup_size(64)
fn reduce_slices(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = 4u * ((wid.y * nwg.x + wid.x) * 64u + lid);
  if (i >= REDUCE_LEN) {
    return;
  }
  if (REDUCE_LEN % 4u == 0u) {
    var sum = vec4<f32>(0.0);
    for (var s = 0u; s < SLICES; s++) {
      sum += in_a[(s * REDUCE_LEN + i) / 4u];
    }
    store_quad(0u, i, REDUCE_LEN, sum, ACCUMULATE);
    return;
  }
  var sum = vec4<f32>(0.0);
  for (var s = 0u; s < SLICES; s++) {
    for (var j = 0u; j < 4u; j++) {
      if (i + j < REDUCE_LEN) {
        let e = s * REDUCE_LEN + i + j;
        sum[j] += in_a[e / 4u][e % 4u];
      }
    }
  }
  store_quad(0u, i, REDUCE_LEN, sum, ACCUMULATE);
}
