/** Row-wise L2 normalisation (forward and backward) of [rows, cols] matrices. */
import { type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

/** Forward: a = x, out = y; backward: a = y, b = dy, out = dx. */
const L2NORM = kernelFile("l2norm", ["a", "b", "norms", "out"]);

/** Where the stacked side of a call sits in a taller buffer (in rows). */
export interface L2NormOptions {
  /** Forward: write y and norms starting at this row. Backward: read y, norms and dy from here. */
  rowOffset?: number;
}

function matrixShape(name: string, t: Tensor): [number, number] {
  if (t.shape.length !== 2) {
    throw new Error(`l2norm: ${name} must be [rows, cols], got [${t.shape}]`);
  }
  return [t.shape[0], t.shape[1]];
}

function checkStacked(name: string, t: Tensor, rows: number, cols: number, offset: number): void {
  const [tRows, tCols] = matrixShape(name, t);
  if (tCols !== cols || tRows < offset + rows) {
    throw new Error(
      `l2norm: ${name} [${t.shape}] cannot hold ${rows} rows of ${cols} starting at row ${offset}`,
    );
  }
}

function checkNorms(norms: Tensor, rows: number, offset: number): void {
  if (norms.size < offset + rows) {
    throw new Error(`l2norm: norms holds ${norms.size} < ${offset + rows} values`);
  }
}

/** y = x / max(|x|, 1e-12) per row, norms = |x| per row (kept for the backward). */
export function l2normForward(
  gpu: Gpu,
  x: Tensor,
  y: Tensor,
  norms: Tensor,
  options: L2NormOptions = {},
): void {
  const [rows, cols] = matrixShape("x", x);
  const rowOffset = options.rowOffset ?? 0;
  checkStacked("y", y, rows, cols, rowOffset);
  checkNorms(norms, rows, rowOffset);
  dispatch(gpu, "forward", rows, cols, rowOffset, { a: x, norms, out: y });
}

/** dx = (dy - y (y . dy)) / max(norm, 1e-12) per row: the gradient through the normalisation. */
export function l2normBackward(
  gpu: Gpu,
  y: Tensor,
  norms: Tensor,
  dy: Tensor,
  dx: Tensor,
  options: L2NormOptions = {},
): void {
  const [rows, cols] = matrixShape("dx", dx);
  const rowOffset = options.rowOffset ?? 0;
  checkStacked("y", y, rows, cols, rowOffset);
  checkStacked("dy", dy, rows, cols, rowOffset);
  checkNorms(norms, rows, rowOffset);
  dispatch(gpu, "backward", rows, cols, rowOffset, { a: y, b: dy, norms, out: dx });
}

function dispatch(
  gpu: Gpu,
  entryPoint: "forward" | "backward",
  rows: number,
  cols: number,
  rowOffset: number,
  storage: { a: Tensor; b?: Tensor; norms: Tensor; out: Tensor },
): void {
  gpu.dispatch(gpu.kernel(L2NORM, { entryPoint }), {
    uniforms: packUniforms([["u32", rows], ["u32", cols], ["u32", rowOffset], ["u32", 0]]),
    storage,
    workgroups: grid1d(rows, gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}
