/** Weighted kNN class scores from a similarity matrix (the SSL kNN monitor). */
import { type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const KNN = kernelFile("knn", ["sim", "bankLabels", "scores"]);

/** Largest k and class count the kernel's workgroup arrays hold. */
export const KNN_MAX_K = 1024;
export const KNN_MAX_CLASSES = 1024;

/**
 * scores[q, c] = sum over the k most similar bank entries j of query q with label c of
 * exp(sim[q, j] / temperature). Ties at the k-th value are broken by bank order.
 */
export function knnScores(
  gpu: Gpu,
  sim: Tensor,
  bankLabels: Tensor,
  scores: Tensor,
  options: { k: number; classes: number; temperature: number },
): void {
  const [queries, bank] = sim.shape;
  const { k, classes, temperature } = options;
  if (sim.shape.length !== 2) {
    throw new Error(`knnScores: sim must be [queries, bank], got [${sim.shape}]`);
  }
  if (bankLabels.dtype !== "u32" || bankLabels.size !== bank) {
    throw new Error(
      `knnScores: need ${bank} u32 bank labels, got [${bankLabels.shape}] ${bankLabels.dtype}`,
    );
  }
  if (scores.size !== queries * classes) {
    throw new Error(`knnScores: scores must be [${queries}, ${classes}], got [${scores.shape}]`);
  }
  if (k < 1 || k > KNN_MAX_K) throw new Error(`knnScores: k=${k} outside 1..${KNN_MAX_K}`);
  if (classes > KNN_MAX_CLASSES) {
    throw new Error(`knnScores: ${classes} classes exceed ${KNN_MAX_CLASSES}`);
  }
  gpu.dispatch(gpu.kernel(KNN), {
    uniforms: packUniforms([
      ["u32", queries],
      ["u32", bank],
      ["u32", k],
      ["u32", classes],
      ["f32", 1 / temperature],
    ]),
    storage: { sim, bankLabels, scores },
    workgroups: grid1d(queries, gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}
