/** The truncated triplet loss (METHOD.md) on a similarity matrix and its sorted negatives. */
import { ceilDiv, type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const TRIPLET = kernelFile("triplet", [
  "similarity",
  "sortedDistances",
  "rowLoss",
  "active",
  "zHat",
  "sortedIndex",
  "dpHat",
]);

const WORKGROUP = 256;

/** The loss's hyper-parameters: the deputy is the mean distance of ranks window[0]..window[1]. */
export interface TripletParams {
  /** 1-based, inclusive ranks among the n - 1 negatives sorted by distance ascending. */
  window: [number, number];
  /** Weight of the positive distance (METHOD.md: 2). */
  gamma: number;
  /** Margin M (METHOD.md: 100, which never clips). */
  margin: number;
}

/** Throws a clear error unless the rank window fits in the n - 1 negatives and m sorted ranks. */
export function checkTripletWindow(window: [number, number], n: number, sortedCols = n - 1): void {
  const [first, last] = window;
  if (!Number.isInteger(first) || !Number.isInteger(last) || first < 1 || last < first) {
    throw new Error(`triplet: rank window [${window}] must be integers with 1 <= first <= last`);
  }
  if (last > n - 1) {
    throw new Error(
      `triplet: rank window [${window}] needs ${last} negatives, but a batch of ${n} has ` +
        `only ${n - 1} per row; use a larger batch or a smaller window`,
    );
  }
  if (last > sortedCols) {
    throw new Error(`triplet: rank window [${window}] reaches past the ${sortedCols} sorted ranks`);
  }
}

function uniforms(n: number, dim: number, sortedCols: number, p: TripletParams): ArrayBuffer {
  return packUniforms([
    ["u32", n],
    ["u32", dim],
    ["u32", sortedCols],
    ["u32", p.window[0]],
    ["u32", p.window[1]],
    ["f32", p.gamma],
    ["f32", p.margin],
    ["f32", 1 / n],
  ]);
}

function checkSquare(similarity: Tensor): number {
  const [n, cols] = similarity.shape;
  if (similarity.shape.length !== 2 || n !== cols) {
    throw new Error(`triplet: similarity must be [n, n], got [${similarity.shape}]`);
  }
  return n;
}

function checkSorted(name: string, sorted: Tensor, n: number, dtype: "f32" | "u32"): number {
  if (sorted.shape.length !== 2 || sorted.shape[0] !== n || sorted.dtype !== dtype) {
    throw new Error(
      `triplet: ${name} must be ${dtype} [${n}, m], got ${sorted.dtype} [${sorted.shape}]`,
    );
  }
  return sorted.shape[1];
}

function checkVector(name: string, t: Tensor, n: number): void {
  if (t.size !== n) throw new Error(`triplet: ${name} must hold ${n} values, got [${t.shape}]`);
}

/**
 * Per-row losses l_i / n into `rowLoss` (sum them for the loss) and the open-hinge mask into
 * `active`, from S [n, n] and each row's sorted negative distances [n, m] (diagonal excluded).
 */
export function tripletForward(
  gpu: Gpu,
  similarity: Tensor,
  sortedDistances: Tensor,
  rowLoss: Tensor,
  active: Tensor,
  params: TripletParams,
): void {
  const n = checkSquare(similarity);
  const sortedCols = checkSorted("sortedDistances", sortedDistances, n, "f32");
  checkTripletWindow(params.window, n, sortedCols);
  checkVector("rowLoss", rowLoss, n);
  checkVector("active", active, n);
  gpu.dispatch(gpu.kernel(TRIPLET, { entryPoint: "forward" }), {
    uniforms: uniforms(n, 0, sortedCols, params),
    storage: { similarity, sortedDistances, rowLoss, active },
    workgroups: grid1d(ceilDiv(n, WORKGROUP), gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}

/** dL/dp_hat [n, d] (overwritten) from z_hat [n, d], the sorted negatives' columns and `active`. */
export function tripletBackward(
  gpu: Gpu,
  zHat: Tensor,
  sortedIndex: Tensor,
  active: Tensor,
  dpHat: Tensor,
  params: TripletParams,
): void {
  if (zHat.shape.length !== 2) throw new Error(`triplet: zHat must be [n, d], got [${zHat.shape}]`);
  const [n, dim] = zHat.shape;
  if (dpHat.shape.join() !== zHat.shape.join()) {
    throw new Error(`triplet: dpHat [${dpHat.shape}] must match zHat [${zHat.shape}]`);
  }
  const sortedCols = checkSorted("sortedIndex", sortedIndex, n, "u32");
  checkTripletWindow(params.window, n, sortedCols);
  checkVector("active", active, n);
  gpu.dispatch(gpu.kernel(TRIPLET, { entryPoint: "backward" }), {
    uniforms: uniforms(n, dim, sortedCols, params),
    storage: { active, zHat, sortedIndex, dpHat },
    workgroups: grid1d(ceilDiv(n * dim, WORKGROUP), gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}
