/**
 * Weighted kNN class scores from a similarity matrix (the SSL kNN monitor): in one pass over the
 * whole bank ({@link knnScores}), or block by block for banks too big for one binding
 * ({@link knnMerge} per block, then {@link knnVote}), with bitwise the same scores.
 */
import { type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const KNN = kernelFile("knn", [
  "sim",
  "bankLabels",
  "scores",
  "keptValues",
  "keptLabels",
  "nextValues",
  "nextLabels",
]);

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
      ["u32", 0],
      ["u32", 0],
    ]),
    storage: { sim, bankLabels, scores },
    workgroups: grid1d(queries, gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}

/**
 * Each query's best candidates so far: values [queries, capacity] (similarities) and labels
 * [queries, capacity] (u32), the first `count` entries of every row valid, in bank order.
 */
export interface KnnCandidates {
  values: Tensor;
  labels: Tensor;
  count: number;
}

function checkCandidates(name: string, c: KnnCandidates, queries: number, capacity: number) {
  const want = queries * capacity;
  if (c.values.size !== want || c.values.dtype !== "f32") {
    throw new Error(`knn: ${name} values must be [${queries}, ${capacity}] f32`);
  }
  if (c.labels.size !== want || c.labels.dtype !== "u32") {
    throw new Error(`knn: ${name} labels must be [${queries}, ${capacity}] u32`);
  }
  if (!Number.isInteger(c.count) || c.count < 0 || c.count > capacity) {
    throw new Error(`knn: ${name} count ${c.count} outside 0..${capacity}`);
  }
}

/**
 * Merge one bank block into each query's top-k: the candidates kept so far (`kept`, all from
 * earlier bank rows) followed by the block's similarities sim [queries, cols] (labels
 * blockLabels [cols]) are ranked as one row, and its top-k (by value, ties in bank order, as
 * {@link knnScores} takes them) is written in bank order to `next` (a different pair of tensors
 * of the same [queries, k] shape). Returns `next` with its count, min(k, kept.count + cols).
 */
export function knnMerge(
  gpu: Gpu,
  sim: Tensor,
  blockLabels: Tensor,
  kept: KnnCandidates,
  next: { values: Tensor; labels: Tensor },
  k: number,
): KnnCandidates {
  if (sim.shape.length !== 2) {
    throw new Error(`knnMerge: sim must be [queries, block], got [${sim.shape}]`);
  }
  const [queries, cols] = sim.shape;
  if (k < 1 || k > KNN_MAX_K) throw new Error(`knnMerge: k=${k} outside 1..${KNN_MAX_K}`);
  if (blockLabels.dtype !== "u32" || blockLabels.size !== cols) {
    throw new Error(
      `knnMerge: need ${cols} u32 block labels, got [${blockLabels.shape}] ${blockLabels.dtype}`,
    );
  }
  checkCandidates("kept", kept, queries, k);
  const result = { ...next, count: Math.min(k, kept.count + cols) };
  checkCandidates("next", result, queries, k);
  if (next.values.buffer === kept.values.buffer || next.labels.buffer === kept.labels.buffer) {
    throw new Error("knnMerge: next must not share buffers with kept");
  }
  gpu.dispatch(gpu.kernel(KNN, { entryPoint: "merge" }), {
    uniforms: packUniforms([
      ["u32", queries],
      ["u32", cols],
      ["u32", k],
      ["u32", 0],
      ["f32", 0],
      ["u32", kept.count],
      ["u32", k],
    ]),
    storage: {
      sim,
      bankLabels: blockLabels,
      keptValues: kept.values,
      keptLabels: kept.labels,
      nextValues: next.values,
      nextLabels: next.labels,
    },
    workgroups: grid1d(queries, gpu.limits.maxComputeWorkgroupsPerDimension),
  });
  return result;
}

/**
 * scores [queries, classes] from merged candidates that hold each query's whole top-k: the same
 * weighted vote as {@link knnScores}, summed in its order, so the scores are bitwise equal.
 */
export function knnVote(
  gpu: Gpu,
  candidates: KnnCandidates,
  scores: Tensor,
  options: { classes: number; temperature: number },
): void {
  const { classes, temperature } = options;
  const queries = scores.shape[0];
  if (scores.shape.length !== 2 || scores.shape[1] !== classes) {
    throw new Error(`knnVote: scores must be [queries, ${classes}], got [${scores.shape}]`);
  }
  if (classes > KNN_MAX_CLASSES) {
    throw new Error(`knnVote: ${classes} classes exceed ${KNN_MAX_CLASSES}`);
  }
  const capacity = candidates.values.size / Math.max(queries, 1);
  checkCandidates("candidates", candidates, queries, capacity);
  gpu.dispatch(gpu.kernel(KNN, { entryPoint: "vote" }), {
    uniforms: packUniforms([
      ["u32", queries],
      ["u32", 0],
      ["u32", 0],
      ["u32", classes],
      ["f32", 1 / temperature],
      ["u32", candidates.count],
      ["u32", capacity],
    ]),
    storage: { scores, keptValues: candidates.values, keptLabels: candidates.labels },
    workgroups: grid1d(queries, gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}
