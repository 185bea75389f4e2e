// Deterministic per-row reductions: out[r] = sum_c f(x[r, c]) with f(v) = v or v*v.
// No atomics: each workgroup reduces one chunk of one row in a fixed tree order, and rows longer
// than one chunk go through a second pass over the partial sums (the wrapper loops).
// Bindings: 0 uniform {rows, cols, chunk_len, chunks, out_offset}; 1 x (rows x cols, row-major);
// 2 out (rows x chunks, starting at element out_offset). Dispatch: (chunks, rows) workgroups of 256 threads.
// Overrides: SQUARE (square each element first), SQRT (take the square root of the result; only
// meaningful when chunks == 1).

override SQUARE: bool = false;
override SQRT: bool = false;

struct Params {
  rows: u32,
  cols: u32,
  chunk_len: u32,
  chunks: u32,
  out_offset: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let chunk = wid.x;
  let row = wid.y;
  let start = chunk * params.chunk_len;
  let stop = min(start + params.chunk_len, params.cols);
  let base = row * params.cols;
  var acc = 0.0;
  for (var c = start + lid; c < stop; c += WG) {
    let v = x[base + c];
    acc += select(v, v * v, SQUARE);
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let total = partial[0];
    out[params.out_offset + row * params.chunks + chunk] = select(total, sqrt(total), SQRT);
  }
}
