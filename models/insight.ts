/**
 * What a backbone learned, in numbers a picture can show: kNN predictions per test image, the
 * confusion matrix and per-class accuracy, nearest neighbours by cosine similarity (retrieval),
 * and a 2-D map of the embeddings (exact t-SNE, seeded, deterministic).
 */
import type { Gpu } from "../runtime/gpu.ts";
import { Rng } from "../runtime/random.ts";
import {
  type EvaluatedFeatures,
  evaluationIndices,
  extractFeatures,
  type ImageSource,
  knnClassify,
} from "./evaluate.ts";
import type { ResNet } from "./resnet.ts";

/** Rows scaled to unit length (zero rows stay zero). */
export function normaliseRows(features: Float32Array, dim: number): Float32Array {
  const out = new Float32Array(features.length);
  for (let r = 0; r < features.length / dim; r++) {
    let s = 0;
    for (let c = 0; c < dim; c++) s += features[r * dim + c] ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let c = 0; c < dim; c++) out[r * dim + c] = features[r * dim + c] * inv;
  }
  return out;
}

/** matrix[true][predicted] = how many test images of class `true` were predicted `predicted`. */
export function confusionMatrix(
  labels: ArrayLike<number>,
  predicted: ArrayLike<number>,
  classes: number,
): number[][] {
  if (labels.length !== predicted.length) {
    throw new Error(`confusionMatrix: ${labels.length} labels but ${predicted.length} predictions`);
  }
  const matrix = Array.from({ length: classes }, () => new Array<number>(classes).fill(0));
  for (let i = 0; i < labels.length; i++) matrix[labels[i]][predicted[i]]++;
  return matrix;
}

/** Accuracy of each class (the diagonal over the row sum; null for a class with no images). */
export function perClassAccuracy(matrix: number[][]): (number | null)[] {
  return matrix.map((row, c) => {
    const total = row.reduce((a, b) => a + b, 0);
    return total > 0 ? row[c] / total : null;
  });
}

/**
 * For each query row, the `k` bank rows of highest cosine similarity, best first (ties: lower
 * bank index first), with their similarities. Queries and bank are raw features.
 */
export function nearestNeighbours(
  bank: Float32Array,
  queries: Float32Array,
  dim: number,
  k: number,
): { indices: Int32Array; similarities: Float32Array } {
  const bankCount = bank.length / dim;
  const queryCount = queries.length / dim;
  const kept = Math.min(k, bankCount);
  const b = normaliseRows(bank, dim);
  const q = normaliseRows(queries, dim);
  const indices = new Int32Array(queryCount * kept);
  const similarities = new Float32Array(queryCount * kept);
  for (let qi = 0; qi < queryCount; qi++) {
    // The best `kept` so far, sorted best first (insertion: k is small).
    const bestIndex: number[] = [];
    const bestSim: number[] = [];
    for (let j = 0; j < bankCount; j++) {
      let s = 0;
      for (let c = 0; c < dim; c++) s += q[qi * dim + c] * b[j * dim + c];
      if (bestSim.length === kept && s <= bestSim[kept - 1]) continue;
      let at = bestSim.length;
      while (at > 0 && s > bestSim[at - 1]) at--;
      bestSim.splice(at, 0, s);
      bestIndex.splice(at, 0, j);
      if (bestSim.length > kept) {
        bestSim.pop();
        bestIndex.pop();
      }
    }
    indices.set(bestIndex, qi * kept);
    similarities.set(bestSim, qi * kept);
  }
  return { indices, similarities };
}

/**
 * Seeded query rows for a retrieval picture: one image of each class (a random one of that
 * class), or `fallback` random rows when there are no labels (one class).
 */
export function retrievalQueries(
  labels: ArrayLike<number>,
  classes: number,
  seed: number,
  fallback = 8,
): number[] {
  const rng = new Rng(seed);
  const count = labels.length;
  if (classes <= 1) {
    const picked = new Set<number>();
    while (picked.size < Math.min(fallback, count)) picked.add(Math.floor(rng.next() * count));
    return [...picked].sort((a, b) => a - b);
  }
  const byClass: number[][] = Array.from({ length: classes }, () => []);
  for (let i = 0; i < count; i++) byClass[labels[i]].push(i);
  return byClass.filter((rows) => rows.length > 0).map((rows) =>
    rows[Math.floor(rng.next() * rows.length)]
  );
}

/** t-SNE settings. */
export interface TsneOptions {
  seed: number;
  /** Effective number of neighbours (default 30). */
  perplexity?: number;
  /** Gradient steps (default 500; the first quarter with early exaggeration 12). */
  iterations?: number;
}

/** Squared Euclidean distances between all rows, in float64. */
function squaredDistances(points: Float32Array, dim: number): Float64Array {
  const n = points.length / dim;
  const d = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      let s = 0;
      for (let c = 0; c < dim; c++) {
        const diff = points[i * dim + c] - points[j * dim + c];
        s += diff * diff;
      }
      d[i * n + j] = s;
      d[j * n + i] = s;
    }
  }
  return d;
}

/** Symmetric affinities P (sum 1) whose conditional rows have the given perplexity. */
function affinities(distances: Float64Array, n: number, perplexity: number): Float64Array {
  const p = new Float64Array(n * n);
  const targetEntropy = Math.log(perplexity);
  const row = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    // Binary search on beta = 1 / (2 sigma^2) for the row's entropy.
    let beta = 1;
    let lo = 0;
    let hi = Infinity;
    for (let attempt = 0; attempt < 64; attempt++) {
      let sum = 0;
      let weighted = 0;
      for (let j = 0; j < n; j++) {
        row[j] = j === i ? 0 : Math.exp(-beta * distances[i * n + j]);
        sum += row[j];
        weighted += row[j] * distances[i * n + j];
      }
      const entropy = Math.log(Math.max(sum, 1e-300)) + beta * weighted / Math.max(sum, 1e-300);
      if (Math.abs(entropy - targetEntropy) < 1e-5) break;
      if (entropy > targetEntropy) {
        lo = beta;
        beta = hi === Infinity ? beta * 2 : (beta + hi) / 2;
      } else {
        hi = beta;
        beta = (beta + lo) / 2;
      }
    }
    let sum = 0;
    for (let j = 0; j < n; j++) sum += row[j];
    for (let j = 0; j < n; j++) p[i * n + j] = row[j] / Math.max(sum, 1e-300);
  }
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const s = Math.max((p[i * n + j] + p[j * n + i]) / (2 * n), 1e-12);
      p[i * n + j] = s;
      p[j * n + i] = s;
    }
  }
  return p;
}

/**
 * Exact t-SNE (van der Maaten & Hinton 2008) of the rows of `points` to 2-D: perplexity
 * calibrated affinities, Student-t kernel, momentum 0.5 then 0.8, adaptive gains, learning rate
 * max(n / 12, 50). O(n^2) per step: meant for a few thousand points. Same seed, same map.
 * Returns [n, 2] coordinates.
 */
export function tsne(points: Float32Array, dim: number, options: TsneOptions): Float32Array {
  const n = points.length / dim;
  if (n < 2) return new Float32Array(n * 2);
  const perplexity = Math.min(options.perplexity ?? 30, (n - 1) / 3);
  const iterations = options.iterations ?? 500;
  const exaggerated = Math.floor(iterations / 4);
  const p = affinities(squaredDistances(points, dim), n, perplexity);
  const rng = new Rng(options.seed);
  const y = Float64Array.from({ length: n * 2 }, () => 1e-4 * rng.normal());
  const velocity = new Float64Array(n * 2);
  const gains = new Float64Array(n * 2).fill(1);
  const gradient = new Float64Array(n * 2);
  const kernel = new Float64Array(n * n);
  const learningRate = Math.max(n / 12, 50);
  for (let step = 0; step < iterations; step++) {
    const exaggeration = step < exaggerated ? 12 : 1;
    const momentum = step < exaggerated ? 0.5 : 0.8;
    let sum = 0;
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        const dx = y[2 * i] - y[2 * j];
        const dy = y[2 * i + 1] - y[2 * j + 1];
        const q = 1 / (1 + dx * dx + dy * dy);
        kernel[i * n + j] = q;
        kernel[j * n + i] = q;
        sum += 2 * q;
      }
    }
    gradient.fill(0);
    for (let i = 0; i < n; i++) {
      let gx = 0;
      let gy = 0;
      for (let j = 0; j < n; j++) {
        if (j === i) continue;
        const q = kernel[i * n + j];
        const force = (exaggeration * p[i * n + j] - q / sum) * q;
        gx += force * (y[2 * i] - y[2 * j]);
        gy += force * (y[2 * i + 1] - y[2 * j + 1]);
      }
      gradient[2 * i] = 4 * gx;
      gradient[2 * i + 1] = 4 * gy;
    }
    for (let e = 0; e < n * 2; e++) {
      const sameSign = Math.sign(gradient[e]) === Math.sign(velocity[e]);
      gains[e] = Math.max(0.01, sameSign ? gains[e] * 0.8 : gains[e] + 0.2);
      velocity[e] = momentum * velocity[e] - learningRate * gains[e] * gradient[e];
      y[e] += velocity[e];
    }
    // Keep the map centred.
    for (let axis = 0; axis < 2; axis++) {
      let mean = 0;
      for (let i = 0; i < n; i++) mean += y[2 * i + axis];
      mean /= n;
      for (let i = 0; i < n; i++) y[2 * i + axis] -= mean;
    }
  }
  return Float32Array.from(y);
}

/** What {@link inspectBackbone} looks at. */
export interface InsightOptions {
  knnK: number;
  knnTemperature: number;
  /** Training images in the bank (0: all), chosen as `evaluateBackbone` chooses them. */
  bankSize: number;
  /** Test images (0: all): the first ones, as `evaluateBackbone` takes them. */
  testSize: number;
  /** Neighbours shown per retrieval query. */
  neighbours: number;
  /** Test images placed on the 2-D map (the first ones; t-SNE is O(n^2)). */
  mapPoints: number;
  seed: number;
  batchSize: number;
  /**
   * Features an evaluation already extracted (`evaluateBackbone`'s `keep`): used when they are of
   * the same images, so the pictures cost no second pass over the bank and the test split.
   */
  features?: EvaluatedFeatures;
}

function sameIndices(a: Uint32Array, b: Uint32Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Numbers behind the pictures; indices refer to the train (bank) and test splits. */
export interface Insight {
  /** kNN top-1 from the predictions below (equals `evaluateBackbone`'s on the same sets). */
  knnTop1: number;
  /** confusion[true][predicted]. */
  confusion: number[][];
  perClassKnnTop1: (number | null)[];
  /** Test indices of the retrieval queries, one per class. */
  queries: number[];
  queryLabels: number[];
  /** Train indices of each query's neighbours, best first, and their labels. */
  neighbours: number[][];
  neighbourLabels: number[][];
  /** [n, 2] t-SNE coordinates of the first `mapPoints` test images, and their labels. */
  map: Float32Array;
  mapLabels: Int32Array;
}

/** Features of the bank and the test images, then predictions, retrieval and the map. */
export async function inspectBackbone(
  gpu: Gpu,
  backbone: ResNet,
  train: ImageSource,
  test: ImageSource,
  options: InsightOptions,
  onProgress?: (what: string, done: number, total: number) => void,
): Promise<Insight> {
  // The images evaluateBackbone looks at, so the numbers agree with its kNN top-1.
  const { bankIndices, testIndices } = evaluationIndices(train, test, options);
  const testSize = testIndices.length;
  const known = options.features;
  const bank = known && sameIndices(known.bankIndices, bankIndices)
    ? known.bank
    : await extractFeatures(
      gpu,
      backbone,
      train,
      bankIndices,
      options.batchSize,
      (d, t) => onProgress?.("features (train)", d, t),
    );
  const testSet = known && sameIndices(known.testIndices, testIndices)
    ? known.test
    : await extractFeatures(
      gpu,
      backbone,
      test,
      testIndices,
      options.batchSize,
      (d, t) => onProgress?.("features (test)", d, t),
    );
  const classes = train.classes;
  const { predictions: predicted } = await knnClassify(gpu, bank, testSet, classes, {
    k: options.knnK,
    temperature: options.knnTemperature,
  });
  const confusion = confusionMatrix(testSet.labels, predicted, classes);
  const correct = confusion.reduce((sum, row, c) => sum + row[c], 0);
  const queries = retrievalQueries(testSet.labels, classes, options.seed);
  const dim = testSet.dim;
  const queryFeatures = new Float32Array(queries.length * dim);
  queries.forEach((q, i) =>
    queryFeatures.set(testSet.features.subarray(q * dim, (q + 1) * dim), i * dim)
  );
  onProgress?.("retrieval", 0, 1);
  const found = nearestNeighbours(bank.features, queryFeatures, dim, options.neighbours);
  const k = found.indices.length / Math.max(1, queries.length);
  const neighbourRows = queries.map((_, i) =>
    Array.from(found.indices.subarray(i * k, (i + 1) * k))
  );
  const mapCount = Math.min(options.mapPoints, testSize);
  onProgress?.("t-SNE map", 0, 1);
  const map = tsne(normaliseRows(testSet.features.subarray(0, mapCount * dim), dim), dim, {
    seed: options.seed,
  });
  return {
    knnTop1: correct / testSize,
    confusion,
    perClassKnnTop1: perClassAccuracy(confusion),
    queries: queries.map((q) => testIndices[q]),
    queryLabels: queries.map((q) => testSet.labels[q]),
    neighbours: neighbourRows.map((row) => row.map((j) => bankIndices[j])),
    neighbourLabels: neighbourRows.map((row) => row.map((j) => bank.labels[j])),
    map,
    mapLabels: testSet.labels.slice(0, mapCount),
  };
}
