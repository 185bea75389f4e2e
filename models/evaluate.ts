/**
 * Evaluation of a frozen backbone (METHOD.md "Evaluation"): features from eval-mode BatchNorm,
 * the kNN monitor (cosine, k = 200, votes exp(sim / 0.1)) and the linear probe (one Linear layer,
 * SGD momentum 0.9, no weight decay, cosine schedule, top-1 / top-5).
 */
import type { Gpu, Tensor } from "../runtime/gpu.ts";
import { Rng } from "../runtime/random.ts";
import { matmul } from "../kernels/matmul.ts";
import {
  KNN_MAX_CLASSES,
  KNN_MAX_K,
  type KnnCandidates,
  knnMerge,
  knnVote,
} from "../kernels/knn.ts";
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

/** Features and labels as one flat array (rows = images): what {@link FeatureSet.from} takes. */
export interface FlatFeatures {
  features: Float32Array;
  dim: number;
  labels: Int32Array;
}

/** Bytes of one host feature block by default: one ImageNet bank is ~80 such blocks. */
const DEFAULT_BLOCK_BYTES = 128 * 2 ** 20;

/**
 * Features (rows = images, in the order asked) and their labels, on the CPU, kept in blocks of
 * `blockRows` rows (the last may be shorter), so that a bank of millions of images is many
 * bounded arrays rather than one array no engine or binding can hold.
 */
export class FeatureSet {
  constructor(
    readonly dim: number,
    readonly labels: Int32Array,
    readonly blocks: Float32Array[],
    readonly blockRows: number,
  ) {
    if (!Number.isInteger(dim) || dim < 1) throw new Error(`FeatureSet: dim ${dim} must be >= 1`);
    if (!Number.isInteger(blockRows) || blockRows < 1) {
      throw new Error(`FeatureSet: blockRows ${blockRows} must be a positive integer`);
    }
    const rows = blocks.reduce((sum, b) => sum + b.length / dim, 0);
    const expected = Math.ceil(labels.length / blockRows);
    const ragged = blocks.some((b, i) =>
      b.length !== dim * Math.min(blockRows, labels.length - i * blockRows)
    );
    if (rows !== labels.length || blocks.length !== expected || ragged) {
      throw new Error(
        `FeatureSet: ${blocks.length} blocks holding ${rows} rows of ${dim} do not hold ` +
          `${labels.length} labelled rows in blocks of ${blockRows}`,
      );
    }
  }

  /** One flat array (and its labels) as blocks of `blockRows` rows (default: one block). */
  static from(flat: FlatFeatures, blockRows = Math.max(1, flat.labels.length)): FeatureSet {
    const { features, dim, labels } = flat;
    if (features.length !== labels.length * dim) {
      throw new Error(
        `FeatureSet: ${features.length} values are not ${labels.length} rows of ${dim}`,
      );
    }
    const blocks: Float32Array[] = [];
    for (let start = 0; start < labels.length; start += blockRows) {
      const end = Math.min(start + blockRows, labels.length);
      blocks.push(features.subarray(start * dim, end * dim)); // views: no copy
    }
    return new FeatureSet(dim, labels, blocks, blockRows);
  }

  /** Rows (images). */
  get length(): number {
    return this.labels.length;
  }

  /** The bank rows [start, end) of block `index`. */
  blockRange(index: number): [number, number] {
    const start = index * this.blockRows;
    return [start, Math.min(start + this.blockRows, this.length)];
  }

  /** Row i (a view into its block). */
  row(i: number): Float32Array {
    const block = this.blocks[Math.floor(i / this.blockRows)];
    const offset = (i % this.blockRows) * this.dim;
    return block.subarray(offset, offset + this.dim);
  }

  /**
   * All rows as one array (writing .npy, tests): the single block itself, else a copy, which
   * for a bank of millions of rows may be more than the engine or the host can allocate.
   */
  get features(): Float32Array {
    if (this.blocks.length === 1) return this.blocks[0];
    let out: Float32Array;
    try {
      out = new Float32Array(this.length * this.dim);
    } catch (e) {
      const gib = (this.length * this.dim * 4 / 2 ** 30).toFixed(1);
      throw new Error(
        `FeatureSet: ${this.length} x ${this.dim} features (${gib} GiB) do not fit one array ` +
          `(${(e as Error).message}); read them block by block (blocks, row)`,
      );
    }
    this.blocks.forEach((b, i) => out.set(b, this.blockRange(i)[0] * this.dim));
    return out;
  }
}

/** A {@link FeatureSet} as is, or a flat one as a single block. */
function asFeatureSet(set: FeatureSet | FlatFeatures): FeatureSet {
  return set instanceof FeatureSet ? set : FeatureSet.from(set);
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

/**
 * Backbone features of `indices` (eval-mode BN), computed in batches and kept in blocks of
 * `blockRows` rows (default: 128 MiB of features per block).
 */
export async function extractFeatures(
  gpu: Gpu,
  backbone: ResNet,
  source: ImageSource,
  indices: ArrayLike<number>,
  batchSize: number,
  onProgress?: (done: number, total: number) => void,
  blockRows?: number,
): Promise<FeatureSet> {
  const ctx = backbone.ctx;
  const previousMode = ctx.mode;
  ctx.mode = "eval";
  const dim = backbone.featureDim;
  const count = indices.length;
  const rowsPerBlock = blockRows ?? Math.max(1, Math.floor(DEFAULT_BLOCK_BYTES / (dim * 4)));
  const blocks = Array.from(
    { length: Math.ceil(count / rowsPerBlock) },
    (_, b) => new Float32Array(Math.min(rowsPerBlock, count - b * rowsPerBlock) * dim),
  );
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
      // The batch's rows may straddle blocks.
      for (let r = 0; r < chunk.length; r++) {
        const row = start + r;
        const offset = (row % rowsPerBlock) * dim;
        blocks[Math.floor(row / rowsPerBlock)].set(values.subarray(r * dim, (r + 1) * dim), offset);
      }
      labels.set(chunkLabels, start);
      images.release();
      ctx.releaseActivations();
      onProgress?.(start + chunk.length, count);
    }
  } finally {
    ctx.mode = previousMode;
  }
  return new FeatureSet(dim, labels, blocks, Math.min(rowsPerBlock, Math.max(count, 1)));
}

/** Rows [start, end) of a feature set, each scaled to unit length, as one array. */
function normalisedRows(set: FeatureSet, start: number, end: number): Float32Array {
  const dim = set.dim;
  const out = new Float32Array((end - start) * dim);
  for (let r = start; r < end; r++) {
    const row = set.row(r);
    let s = 0;
    for (let c = 0; c < dim; c++) s += row[c] ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    const o = (r - start) * dim;
    for (let c = 0; c < dim; c++) out[o + c] = row[c] * inv;
  }
  return out;
}

/** The kNN monitor's settings. */
export interface KnnOptions {
  k: number;
  temperature: number;
  /**
   * Bank rows per GPU block (default: as many as fit the adapter's binding limit and 256 MiB).
   * Any block size gives bitwise the same scores; tests force tiny blocks.
   */
  blockRows?: number;
  /** Test rows per similarity block (default 1024, fewer if the binding limit needs it). */
  queryRows?: number;
  /** Also return every query's class scores (test x classes floats). */
  keepScores?: boolean;
}

/** Largest GPU tensor the kNN monitor makes (under the adapter's binding limit). */
const KNN_TENSOR_BYTES = 256 * 2 ** 20;

/**
 * The kNN monitor's predicted class for every `test` row against the `bank` (cosine
 * similarity, weighted top-k vote; the lowest class wins a tie of scores), and optionally the
 * scores. The bank goes to the GPU block by block, each block's similarities to a chunk of
 * queries are merged into that chunk's running top-k (kernels/knn.wgsl `merge`), and the vote
 * runs on the merged top-k: the scores are bitwise those of one pass over the whole bank.
 */
export async function knnClassify(
  gpu: Gpu,
  bankSet: FeatureSet | FlatFeatures,
  testSet: FeatureSet | FlatFeatures,
  classes: number,
  options: KnnOptions,
): Promise<{ predictions: Int32Array; scores?: Float32Array }> {
  const bank = asFeatureSet(bankSet);
  const test = asFeatureSet(testSet);
  const dim = bank.dim;
  if (test.dim !== dim) throw new Error(`kNN: test features have ${test.dim} dims, bank ${dim}`);
  const k = options.k;
  if (!Number.isInteger(k) || k < 1 || k > KNN_MAX_K) {
    throw new Error(`kNN: k = ${k} must be an integer in 1..${KNN_MAX_K}`);
  }
  if (classes < 1 || classes > KNN_MAX_CLASSES) {
    throw new Error(`kNN: ${classes} classes outside 1..${KNN_MAX_CLASSES}`);
  }
  const testCount = test.length;
  const predictions = new Int32Array(testCount);
  const scores = options.keepScores ? new Float32Array(testCount * classes) : undefined;
  if (testCount === 0) return { predictions, scores };
  if (bank.length === 0) throw new Error("kNN: the bank is empty");
  for (const name of ["blockRows", "queryRows"] as const) {
    const value = options[name];
    if (value !== undefined && !(Number.isInteger(value) && value >= 1)) {
      throw new Error(`kNN: ${name} = ${value} must be a positive integer`);
    }
  }
  const limit = Math.min(gpu.maxBindingBytes, KNN_TENSOR_BYTES);
  const rowsFitting = Math.floor(limit / (4 * Math.max(dim, classes, k)));
  if (rowsFitting < 1) throw new Error(`kNN: one feature row of ${dim} floats exceeds ${limit} B`);
  const queryRows = Math.min(testCount, options.queryRows ?? 1024, rowsFitting);
  const blockCols = Math.max(
    1,
    Math.min(
      options.blockRows ?? Infinity,
      Math.floor(limit / (4 * dim)),
      Math.floor(limit / (4 * queryRows)),
    ),
  );
  // Every chunk of queries keeps its unit rows and its candidates (two pairs, ping-ponged).
  const chunks: {
    start: number;
    rows: number;
    queries: Tensor;
    candidates: KnnCandidates;
    spare: { values: Tensor; labels: Tensor };
  }[] = [];
  try {
    for (let start = 0; start < testCount; start += queryRows) {
      const rows = Math.min(queryRows, testCount - start);
      const pair = () => ({ values: gpu.empty([rows, k]), labels: gpu.empty([rows, k], "u32") });
      chunks.push({
        start,
        rows,
        queries: gpu.upload(normalisedRows(test, start, start + rows), [rows, dim]),
        candidates: { ...pair(), count: 0 },
        spare: pair(),
      });
    }
    for (let b = 0; b < bank.blocks.length; b++) {
      const [blockStart, blockEnd] = bank.blockRange(b);
      for (let start = blockStart; start < blockEnd; start += blockCols) {
        const end = Math.min(start + blockCols, blockEnd);
        const bankRows = gpu.upload(normalisedRows(bank, start, end), [end - start, dim]);
        const bankLabels = gpu.upload(bank.labels.subarray(start, end), [end - start], "u32");
        for (const chunk of chunks) {
          const sim = gpu.empty([chunk.rows, end - start]);
          matmul(gpu, chunk.queries, bankRows, sim, { transposeB: true });
          const merged = knnMerge(gpu, sim, bankLabels, chunk.candidates, chunk.spare, k);
          chunk.spare = { values: chunk.candidates.values, labels: chunk.candidates.labels };
          chunk.candidates = merged;
          sim.release();
        }
        bankRows.release();
        bankLabels.release();
        // Submit per block, so that upload staging buffers do not pile up over many blocks.
        gpu.flush();
      }
    }
    for (const chunk of chunks) {
      const chunkScores = gpu.empty([chunk.rows, classes]);
      knnVote(gpu, chunk.candidates, chunkScores, { classes, temperature: options.temperature });
      const [values] = await gpu.read([chunkScores]);
      chunkScores.release();
      for (let r = 0; r < chunk.rows; r++) {
        predictions[chunk.start + r] = argmax(values, r * classes, classes);
      }
      scores?.set(values, chunk.start * classes);
    }
  } finally {
    for (const c of chunks) {
      for (const t of [c.queries, c.candidates.values, c.candidates.labels]) t.release();
      for (const t of [c.spare.values, c.spare.labels]) t.release();
    }
  }
  return { predictions, scores };
}

/** kNN monitor top-1 accuracy (fraction) of `test` against the `bank` features. */
export async function knnAccuracy(
  gpu: Gpu,
  bank: FeatureSet | FlatFeatures,
  test: FeatureSet | FlatFeatures,
  classes: number,
  options: KnnOptions,
): Promise<number> {
  const { predictions } = await knnClassify(gpu, bank, test, classes, options);
  const labels = asFeatureSet(test).labels;
  let correct = 0;
  for (let i = 0; i < labels.length; i++) if (predictions[i] === labels[i]) correct++;
  return correct / Math.max(labels.length, 1);
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
  trainSet: FeatureSet | FlatFeatures,
  testSet: FeatureSet | FlatFeatures,
  classes: number,
  options: ProbeOptions,
): Promise<{ top1: number; top5: number }> {
  const train = asFeatureSet(trainSet);
  const test = asFeatureSet(testSet);
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
        x.set(train.row(j), i * dim);
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
    const rowsAsOne = new Float32Array(rows * dim);
    for (let r = 0; r < rows; r++) rowsAsOne.set(test.row(start + r), r * dim);
    const input = gpu.upload(rowsAsOne, [rows, dim]);
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
  /**
   * Bank rows per feature block, on the host and on the GPU (default: 128 MiB of features per
   * host block, GPU blocks as large as the binding limit allows). The kNN result does not depend
   * on it; small values force a small bank into several blocks (tests).
   */
  knnBlockRows?: number;
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

/**
 * The images an evaluation looks at: a seeded subset of `bankSize` training images (all when 0),
 * in index order, and the first `testSize` test images (all when 0).
 */
export function evaluationIndices(
  train: { length: number },
  test: { length: number },
  options: { bankSize: number; testSize: number; seed: number },
): { bankIndices: Uint32Array; testIndices: Uint32Array } {
  const bankSize = options.bankSize > 0 ? Math.min(options.bankSize, train.length) : train.length;
  const testSize = options.testSize > 0 ? Math.min(options.testSize, test.length) : test.length;
  const bankIndices = permutation(train.length, new Rng(options.seed ^ 0x5eed)).slice(0, bankSize);
  bankIndices.sort();
  return { bankIndices, testIndices: Uint32Array.from({ length: testSize }, (_, i) => i) };
}

/** The features an evaluation extracted, and of which images: for a caller that looks again. */
export interface EvaluatedFeatures {
  bankIndices: Uint32Array;
  testIndices: Uint32Array;
  bank: FeatureSet;
  test: FeatureSet;
}

/**
 * Features of a seeded subset of the training split and of the test split, then kNN and probe.
 * `keep` receives the features (the end-of-run pictures reuse them instead of a second pass).
 */
export async function evaluateBackbone(
  gpu: Gpu,
  backbone: ResNet,
  train: ImageSource,
  test: ImageSource,
  options: EvaluationOptions,
  onProgress?: (what: string, done: number, total: number) => void,
  keep?: (features: EvaluatedFeatures) => void,
): Promise<EvaluationResult> {
  const start = performance.now();
  const { bankIndices, testIndices } = evaluationIndices(train, test, options);
  const [bankSize, testSize] = [bankIndices.length, testIndices.length];
  const bank = await extractFeatures(
    gpu,
    backbone,
    train,
    bankIndices,
    options.batchSize,
    (d, t) => onProgress?.("features (train)", d, t),
    options.knnBlockRows,
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
    blockRows: options.knnBlockRows,
  });
  keep?.({ bankIndices, testIndices, bank, test: testFeatures });
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
