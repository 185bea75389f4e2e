/** Deterministic reductions: per-row and whole-tensor sum, sum of squares, L2 norm. */
import { ceilDiv, type Gpu, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const REDUCE = kernelFile("reduce", ["x", "out"]);

/** Elements one workgroup reduces per row chunk (256 threads x 16). */
const CHUNK_LEN = 4096;

type Op = "sum" | "sumsq" | "norm";

/**
 * Reduce each row of `x` (viewed as rows x cols) into `out[outOffset ..]` (rows elements).
 * Long rows reduce in passes over partial sums, always in the same order.
 */
export function reduceRows(
  gpu: Gpu,
  x: Tensor,
  rows: number,
  cols: number,
  op: Op,
  out: Tensor,
  outOffset = 0,
): void {
  if (rows * cols > x.size) {
    throw new Error(`reduceRows: ${rows}x${cols} exceeds tensor [${x.shape}]`);
  }
  if (out.size < outOffset + rows) {
    throw new Error(`reduceRows: output holds ${out.size} < ${outOffset + rows} elements`);
  }
  if (rows > gpu.limits.maxComputeWorkgroupsPerDimension) {
    throw new Error(`reduceRows: ${rows} rows exceed the per-dimension workgroup limit`);
  }
  let input = x;
  let width = cols;
  let square = op !== "sum";
  const temporaries: Tensor[] = [];
  while (true) {
    const chunks = Math.max(1, ceilDiv(width, CHUNK_LEN));
    const last = chunks === 1;
    const target = last ? out : gpu.empty([rows, chunks]);
    if (!last) temporaries.push(target);
    const kernel = gpu.kernel(REDUCE, {
      constants: { SQUARE: square ? 1 : 0, SQRT: last && op === "norm" ? 1 : 0 },
    });
    gpu.dispatch(kernel, {
      uniforms: new Uint32Array([rows, width, CHUNK_LEN, chunks, last ? outOffset : 0]),
      storage: { x: input, out: target },
      workgroups: [chunks, rows],
    });
    if (last) break;
    input = target;
    width = chunks;
    square = false;
  }
  for (const t of temporaries) t.release();
}

/** out[outOffset] = reduction of every element of x. */
export function reduceAll(gpu: Gpu, x: Tensor, op: Op, out: Tensor, outOffset = 0): void {
  reduceRows(gpu, x, 1, x.size, op, out, outOffset);
}
