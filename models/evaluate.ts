/**
 * Evaluation of a frozen backbone (METHOD.md "Evaluation"): features from eval-mode BatchNorm,
 * the kNN monitor (cosine, k = 200, votes exp(sim / 0.1)) and the linear probe (one Linear layer,
 * SGD momentum 0.9, no weight decay, cosine schedule, top-1 / top-5).
 */
import type { Gpu } from "../runtime/gpu.ts";
import { Rng } from "../runtime/random.ts";
import { matmul } from "../kernels/matmul.ts";
import { knnScores } from "../kernels/knn.ts";
import { softmaxCrossEntropy } from "../kernels/softmax_xent.ts";
import { sgdStep } from "../kernels/optimizer.ts";
import { Context, Linear, zeroGrads } from "./layers.ts";
import type { ResNet } from "./resnet.ts";

/** Labelled images: what evaluation needs from a dataset. */
export interface ImageSource {
  length: number;
  classes: number;
  height: number;
  width: number;
  channels: number;
  mean: number[];
  std: number[];
  batch(indices: ArrayLike<number>): Promise<{ pixels: Uint8Array; labels: Int32Array }>;
}

/** Features (rows = images, in the order asked) and their labels, on the CPU. */
export interface FeatureSet {
  features: Float32Array;
  dim: number;
  labels: Int32Array;
}

/** Convert uint8 HWC pixels to normalised float NHWC, as training normalises. */
export function normalisePixels(
  pixels: Uint8Array,
  channels: number,
  mean: number[],
  std: number[],
): Float32Array {
  const out = new Float32Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) {
    const c = i % channels;
    out[i] = (pixels[i] / 255 - mean[c]) / std[c];
  }
  return out;
}

/** Backbone features of `indices` (eval-mode BN), computed in batches. */
export async function extractFeatures(
  gpu: Gpu,
  backbone: ResNet,
  source: ImageSource,
  indices: ArrayLike<number>,
  batchSize: number,
  onProgress?: (done: number, total: number) => void,
): Promise<FeatureSet> {
  const ctx = backbone.ctx;
  const previousMode = ctx.mode;
  ctx.mode = "eval";
  const dim = backbone.featureDim;
  const count = indices.length;
  const features = new Float32Array(count * dim);
  const labels = new Int32Array(count);
  try {
    for (let start = 0; start < count; start += batchSize) {
      const chunk = Array.from(
        { length: Math.min(batchSize, count - start) },
        (_, i) => indices[start + i],
      );
      const { pixels, labels: chunkLabels } = await source.batch(chunk);
      const images = gpu.upload(
        normalisePixels(pixels, source.channels, source.mean, source.std),
        [chunk.length, source.height, source.width, source.channels],
      );
      const out = backbone.forward(images);
      const [values] = await gpu.read([out]);
      features.set(values, start * dim);
      labels.set(chunkLabels, start);
      images.release();
      ctx.releaseActivations();
      onProgress?.(start + chunk.length, count);
    }
  } finally {
    ctx.mode = previousMode;
  }
  return { features, dim, labels };
}

function l2NormaliseRows(features: Float32Array, dim: number): Float32Array {
  const out = new Float32Array(features.length);
  for (let r = 0; r < features.length / dim; r++) {
    let s = 0;
    for (let c = 0; c < dim; c++) s += features[r * dim + c] ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let c = 0; c < dim; c++) out[r * dim + c] = features[r * dim + c] * inv;
  }
  return out;
}

/** kNN monitor top-1 accuracy (fraction) of `test` against the `bank` features. */
export async function knnAccuracy(
  gpu: Gpu,
  bank: FeatureSet,
  test: FeatureSet,
  classes: number,
  options: { k: number; temperature: number },
): Promise<number> {
  const dim = bank.dim;
  const bankCount = bank.labels.length;
  const testCount = test.labels.length;
  const bankTensor = gpu.upload(l2NormaliseRows(bank.features, dim), [bankCount, dim]);
  const bankLabels = gpu.upload(Uint32Array.from(bank.labels), [bankCount], "u32");
  const queries = l2NormaliseRows(test.features, dim);
  // Similarity blocks of at most ~32 MiB.
  const rowsPerBlock = Math.max(1, Math.min(testCount, Math.floor(2 ** 23 / bankCount)));
  let correct = 0;
  for (let start = 0; start < testCount; start += rowsPerBlock) {
    const rows = Math.min(rowsPerBlock, testCount - start);
    const q = gpu.upload(queries.subarray(start * dim, (start + rows) * dim), [rows, dim]);
    const sim = gpu.empty([rows, bankCount]);
    const scores = gpu.empty([rows, classes]);
    matmul(gpu, q, bankTensor, sim, { transposeB: true });
    knnScores(gpu, sim, bankLabels, scores, {
      k: options.k,
      classes,
      temperature: options.temperature,
    });
    const [values] = await gpu.read([scores]);
    for (let r = 0; r < rows; r++) {
      if (argmax(values, r * classes, classes) === test.labels[start + r]) correct++;
    }
    for (const t of [q, sim, scores]) t.release();
  }
  bankTensor.release();
  bankLabels.release();
  return correct / testCount;
}

function argmax(values: ArrayLike<number>, offset: number, count: number): number {
  let best = 0;
  for (let c = 1; c < count; c++) if (values[offset + c] > values[offset + best]) best = c;
  return best;
}

/** Linear probe settings (METHOD.md, shortened by epochs). */
export interface ProbeOptions {
  epochs: number;
  /** lr at batch 256 (scaled by batch / 256). */
  lr: number;
  batch: number;
  seed: number;
}

/** Train one Linear layer on frozen features; return top-1 and top-5 test accuracy. */
export async function linearProbe(
  gpu: Gpu,
  train: FeatureSet,
  test: FeatureSet,
  classes: number,
  options: ProbeOptions,
): Promise<{ top1: number; top5: number }> {
  const ctx = new Context(gpu);
  const rng = new Rng(options.seed);
  const dim = train.dim;
  const fc = new Linear(ctx, "fc", dim, classes, rng);
  const params = fc.parameters();
  const velocity = params.map((p) => gpu.zeros(p.value.shape));
  const count = train.labels.length;
  const batch = Math.min(options.batch, count);
  const stepsPerEpoch = Math.floor(count / batch);
  const totalSteps = Math.max(1, stepsPerEpoch * options.epochs);
  const baseLr = options.lr * batch / 256;
  const x = new Float32Array(batch * dim);
  const y = new Uint32Array(batch);
  let step = 0;
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    const order = permutation(count, rng);
    for (let s = 0; s < stepsPerEpoch; s++) {
      for (let i = 0; i < batch; i++) {
        const j = order[s * batch + i];
        x.set(train.features.subarray(j * dim, (j + 1) * dim), i * dim);
        y[i] = train.labels[j];
      }
      const input = ctx.activation([batch, dim]);
      input.write(x);
      const labels = gpu.upload(y, [batch], "u32");
      zeroGrads(gpu, fc);
      const logits = fc.forward(input);
      const loss = ctx.activation([batch]);
      const dlogits = ctx.activation([batch, classes]);
      softmaxCrossEntropy(gpu, logits, labels, loss, dlogits, 1 / batch);
      fc.backward(dlogits, false);
      const lr = baseLr * 0.5 * (1 + Math.cos(Math.PI * step / totalSteps));
      params.forEach((p, i) =>
        sgdStep(gpu, p.value, p.grad, velocity[i], { lr, momentum: 0.9, weightDecay: 0 })
      );
      labels.release();
      ctx.releaseActivations();
      step++;
    }
  }
  ctx.mode = "eval";
  let top1 = 0;
  let top5 = 0;
  const testCount = test.labels.length;
  for (let start = 0; start < testCount; start += 1024) {
    const rows = Math.min(1024, testCount - start);
    const input = gpu.upload(test.features.subarray(start * dim, (start + rows) * dim), [
      rows,
      dim,
    ]);
    const logits = fc.forward(input);
    const [values] = await gpu.read([logits]);
    for (let r = 0; r < rows; r++) {
      const label = test.labels[start + r];
      const own = values[r * classes + label];
      let higher = 0;
      for (let c = 0; c < classes; c++) {
        const v = values[r * classes + c];
        if (v > own || (v === own && c < label)) higher++;
      }
      if (higher === 0) top1++;
      if (higher < 5) top5++;
    }
    input.release();
    ctx.releaseActivations();
  }
  for (const t of [...velocity, ...params.flatMap((p) => [p.value, p.grad])]) t.release();
  return { top1: top1 / testCount, top5: top5 / testCount };
}

/** A seeded Fisher-Yates permutation of 0..n-1. */
export function permutation(n: number, rng: Rng): Uint32Array {
  const order = Uint32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/** What {@link evaluateBackbone} measures and on how much data. */
export interface EvaluationOptions {
  knnK: number;
  knnTemperature: number;
  /** Training images in the kNN bank and probe training set (0: all). */
  bankSize: number;
  /** Test images (0: all). */
  testSize: number;
  /** Linear probe epochs (0: skip the probe). */
  probeEpochs: number;
  probeLr: number;
  probeBatch: number;
  seed: number;
  /** Images per forward pass while extracting features. */
  batchSize: number;
}

/** Results of one evaluation. */
export interface EvaluationResult {
  knnTop1: number;
  linearTop1?: number;
  linearTop5?: number;
  bankSize: number;
  testSize: number;
  seconds: number;
}

/** Features of a seeded subset of the training split and of the test split, then kNN and probe. */
export async function evaluateBackbone(
  gpu: Gpu,
  backbone: ResNet,
  train: ImageSource,
  test: ImageSource,
  options: EvaluationOptions,
  onProgress?: (what: string, done: number, total: number) => void,
): Promise<EvaluationResult> {
  const start = performance.now();
  const bankSize = options.bankSize > 0 ? Math.min(options.bankSize, train.length) : train.length;
  const testSize = options.testSize > 0 ? Math.min(options.testSize, test.length) : test.length;
  const bankIndices = permutation(train.length, new Rng(options.seed ^ 0x5eed)).slice(0, bankSize);
  bankIndices.sort();
  const testIndices = Uint32Array.from({ length: testSize }, (_, i) => i);
  const bank = await extractFeatures(
    gpu,
    backbone,
    train,
    bankIndices,
    options.batchSize,
    (d, t) => onProgress?.("features (train)", d, t),
  );
  const testFeatures = await extractFeatures(
    gpu,
    backbone,
    test,
    testIndices,
    options.batchSize,
    (d, t) => onProgress?.("features (test)", d, t),
  );
  const knnTop1 = await knnAccuracy(gpu, bank, testFeatures, train.classes, {
    k: options.knnK,
    temperature: options.knnTemperature,
  });
  const result: EvaluationResult = { knnTop1, bankSize, testSize, seconds: 0 };
  if (options.probeEpochs > 0) {
    onProgress?.("linear probe", 0, 1);
    const probe = await linearProbe(gpu, bank, testFeatures, train.classes, {
      epochs: options.probeEpochs,
      lr: options.probeLr,
      batch: options.probeBatch,
      seed: options.seed,
    });
    result.linearTop1 = probe.top1;
    result.linearTop5 = probe.top5;
  }
  result.seconds = (performance.now() - start) / 1000;
  return result;
}
