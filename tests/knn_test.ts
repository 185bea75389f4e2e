import assert from "node:assert/strict";
import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import { knnMerge, knnScores, knnVote } from "../kernels/knn.ts";
import { matmul } from "../kernels/matmul.ts";
import { Context } from "../models/layers.ts";
import { ResNet } from "../models/resnet.ts";
import {
  evaluateBackbone,
  type EvaluatedFeatures,
  extractFeatures,
  FeatureSet,
  type ImageSource,
  knnAccuracy,
  knnClassify,
  type KnnOptions,
  linearProbe,
} from "../models/evaluate.ts";
import { inspectBackbone } from "../models/insight.ts";

/** float64 reference: stable sort by similarity descending, ties by bank index. */
function knnReference(
  sim: Float32Array,
  labels: Uint32Array,
  queries: number,
  bank: number,
  k: number,
  classes: number,
  temperature: number,
): Float64Array {
  const out = new Float64Array(queries * classes);
  for (let q = 0; q < queries; q++) {
    const order = Array.from({ length: bank }, (_, j) => j);
    order.sort((a, b) => sim[q * bank + b] - sim[q * bank + a] || a - b);
    for (const j of order.slice(0, Math.min(k, bank))) {
      out[q * classes + labels[j]] += Math.exp(sim[q * bank + j] / temperature);
    }
  }
  return out;
}

// exp(s / 0.1) of f32 similarities: relative error a few ulps times the vote count.
const TOL = { atol: 1e-5, rtol: 1e-5 };

const CASES: [number, number, number, number][] = [
  // queries, bank, k, classes
  [1, 1, 1, 2],
  [3, 7, 200, 3], // k larger than the bank: every entry votes
  [5, 300, 20, 10],
  [17, 1000, 200, 10],
  [2, 5000, 200, 100],
];

for (const [queries, bank, k, classes] of CASES) {
  Deno.test({
    name: `knn: weighted top-${k} vote, ${queries} queries x ${bank} bank, ${classes} classes`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(queries * 31 + bank);
      const sim = rng.array(queries * bank);
      const labels = Uint32Array.from({ length: bank }, () => Math.floor(rng.next() * classes));
      const tSim = gpu.upload(sim, [queries, bank]);
      const tLabels = gpu.upload(labels, [bank], "u32");
      const scores = gpu.empty([queries, classes]);
      knnScores(gpu, tSim, tLabels, scores, { k, classes, temperature: 0.1 });
      const [got] = await gpu.read([scores]);
      assertClose(got, knnReference(sim, labels, queries, bank, k, classes, 0.1), TOL, "scores");
      for (const t of [tSim, tLabels, scores]) t.release();
    },
  });
}

Deno.test({
  name: "knn: ties at the k-th similarity are taken in bank order",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    // One query; similarities 0.9, then five entries tied at 0.5 with labels 0,1,2,3,4.
    const sim = new Float32Array([0.5, 0.9, 0.5, 0.5, 0.5, 0.5, -0.2]);
    const labels = new Uint32Array([0, 5, 1, 2, 3, 4, 5]);
    const tSim = gpu.upload(sim, [1, 7]);
    const tLabels = gpu.upload(labels, [7], "u32");
    const scores = gpu.empty([1, 6]);
    knnScores(gpu, tSim, tLabels, scores, { k: 3, classes: 6, temperature: 1 });
    const [got] = await gpu.read([scores]);
    // k = 3: 0.9 (label 5), then the first two tied entries in bank order: labels 0 and 1.
    const e5 = Math.exp(0.9);
    const e05 = Math.exp(0.5);
    assertClose(got, [e05, e05, 0, 0, 0, e5], TOL, "scores");
    assert.equal(got[2], 0);
    for (const t of [tSim, tLabels, scores]) t.release();
  },
});

/**
 * Reference top-k of one merged row (kept candidates, then the block), CPU: stable order by value
 * descending, ties by position; the chosen entries returned in position (bank) order.
 */
function mergeReference(values: number[], labels: number[], k: number) {
  const order = values.map((_, j) => j);
  order.sort((a, b) => values[b] - values[a] || a - b);
  const chosen = order.slice(0, Math.min(k, values.length)).sort((a, b) => a - b);
  return { values: chosen.map((j) => values[j]), labels: chosen.map((j) => labels[j]) };
}

Deno.test({
  name: "knn merge: kept candidates + a block -> the top-k in bank order (ties by bank order)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rng = new Rng(77);
    for (
      const [queries, kept, cols, k] of [[3, 0, 5, 8], [4, 6, 9, 8], [2, 8, 300, 8], [
        5,
        20,
        40,
        20,
      ]]
    ) {
      // Values on a coarse grid, so that ties are common, within a row and across kept/block.
      const grid = () => Math.round(rng.uniform(-4, 4)) / 4 + 0; // + 0: no -0 (ranked below 0)
      const keptValues = Float32Array.from({ length: queries * k }, grid);
      const keptLabels = Uint32Array.from(
        { length: queries * k },
        () => Math.floor(rng.next() * 9),
      );
      const sim = Float32Array.from({ length: queries * cols }, grid);
      const blockLabels = Uint32Array.from({ length: cols }, () => Math.floor(rng.next() * 9));
      const kv = gpu.upload(keptValues, [queries, k]);
      const kl = gpu.upload(keptLabels, [queries, k], "u32");
      const tSim = gpu.upload(sim, [queries, cols]);
      const tLabels = gpu.upload(blockLabels, [cols], "u32");
      const next = { values: gpu.zeros([queries, k]), labels: gpu.zeros([queries, k], "u32") };
      const merged = knnMerge(gpu, tSim, tLabels, { values: kv, labels: kl, count: kept }, next, k);
      assert.equal(merged.count, Math.min(k, kept + cols));
      const [gotValues, gotLabels] = await gpu.read([merged.values, merged.labels]);
      for (let q = 0; q < queries; q++) {
        const rowValues = [
          ...keptValues.subarray(q * k, q * k + kept),
          ...sim.subarray(q * cols, (q + 1) * cols),
        ];
        const rowLabels = [...keptLabels.subarray(q * k, q * k + kept), ...blockLabels];
        const want = mergeReference(rowValues, rowLabels, k);
        const got = {
          values: Array.from(gotValues.subarray(q * k, q * k + merged.count)),
          labels: Array.from(gotLabels.subarray(q * k, q * k + merged.count)),
        };
        assert.deepEqual(got, want, `query ${q} (kept ${kept}, block ${cols}, k ${k})`);
      }
      for (const t of [kv, kl, tSim, tLabels, next.values, next.labels]) t.release();
    }
  },
});

Deno.test({
  name: "knn merge + vote over blocks of 1..bank columns = knnScores on the whole bank, bitwise",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const [queries, bank, k, classes] = [6, 200, 20, 7];
    const rng = new Rng(5);
    // Coarse values: many ties straddle block edges, so the tie order is exercised.
    const sim = Float32Array.from(
      { length: queries * bank },
      () => Math.round(rng.uniform(-8, 8)) / 8 + 0,
    );
    const labels = Uint32Array.from({ length: bank }, () => Math.floor(rng.next() * classes));
    const tSim = gpu.upload(sim, [queries, bank]);
    const tLabels = gpu.upload(labels, [bank], "u32");
    const whole = gpu.empty([queries, classes]);
    knnScores(gpu, tSim, tLabels, whole, { k, classes, temperature: 0.1 });
    const [expected] = await gpu.read([whole]);
    for (const blockCols of [1, 3, 19, 20, 64, 200]) {
      const pairs = [0, 1].map(() => ({
        values: gpu.empty([queries, k]),
        labels: gpu.empty([queries, k], "u32"),
      }));
      let candidates = { ...pairs[0], count: 0 };
      let spare = pairs[1];
      for (let start = 0; start < bank; start += blockCols) {
        const cols = Math.min(blockCols, bank - start);
        const block = new Float32Array(queries * cols);
        for (let q = 0; q < queries; q++) {
          block.set(sim.subarray(q * bank + start, q * bank + start + cols), q * cols);
        }
        const tBlock = gpu.upload(block, [queries, cols]);
        const tBlockLabels = gpu.upload(labels.subarray(start, start + cols), [cols], "u32");
        const merged = knnMerge(gpu, tBlock, tBlockLabels, candidates, spare, k);
        spare = { values: candidates.values, labels: candidates.labels };
        candidates = merged;
        tBlock.release();
        tBlockLabels.release();
      }
      const scores = gpu.empty([queries, classes]);
      knnVote(gpu, candidates, scores, { classes, temperature: 0.1 });
      const [got] = await gpu.read([scores]);
      assert.deepEqual(got, expected, `blocks of ${blockCols}: scores bitwise equal`);
      for (const t of [scores, ...pairs.flatMap((p) => [p.values, p.labels])]) t.release();
    }
    for (const t of [tSim, tLabels, whole]) t.release();
  },
});

/** Random features with a class signal, and some bank rows duplicated (exact similarity ties). */
function syntheticFeatures(count: number, dim: number, classes: number, seed: number) {
  const centres = new Rng(1000).normals(classes * dim); // shared by every set of this shape
  const rng = new Rng(seed);
  const labels = Int32Array.from({ length: count }, () => Math.floor(rng.next() * classes));
  const features = new Float32Array(count * dim);
  for (let i = 0; i < count; i++) {
    for (let c = 0; c < dim; c++) {
      features[i * dim + c] = centres[labels[i] * dim + c] + 1.5 * rng.normal();
    }
  }
  // Every 7th row repeats an earlier row (another label), so ties cross block edges.
  for (let i = 7; i < count; i += 7) {
    const from = (i * 5) % i;
    features.copyWithin(i * dim, from * dim, (from + 1) * dim);
    labels[i] = (labels[from] + 1) % classes;
  }
  return { features, dim, labels };
}

Deno.test({
  name: "knn classify: a bank in many tiny blocks gives exactly the one-block answer",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const [dim, classes, k] = [24, 5, 30];
    const bankFlat = syntheticFeatures(120, dim, classes, 1);
    const testFlat = syntheticFeatures(30, dim, classes, 2);
    const oneBlock = await knnClassify(gpu, bankFlat, testFlat, classes, {
      k,
      temperature: 0.1,
      keepScores: true,
    });
    // The single-pass kernel on the whole similarity matrix, as before blocks existed.
    const unit = (f: Float32Array, rows: number) => {
      const out = new Float32Array(f.length);
      for (let r = 0; r < rows; r++) {
        const row = f.subarray(r * dim, (r + 1) * dim);
        const inv = 1 / Math.max(Math.sqrt(row.reduce((s, v) => s + v * v, 0)), 1e-12);
        for (let c = 0; c < dim; c++) out[r * dim + c] = row[c] * inv;
      }
      return out;
    };
    const q = gpu.upload(unit(testFlat.features, 30), [30, dim]);
    const b = gpu.upload(unit(bankFlat.features, 120), [120, dim]);
    const sim = gpu.empty([30, 120]);
    matmul(gpu, q, b, sim, { transposeB: true });
    const bankLabels = gpu.upload(Uint32Array.from(bankFlat.labels), [120], "u32");
    const whole = gpu.empty([30, classes]);
    knnScores(gpu, sim, bankLabels, whole, { k, classes, temperature: 0.1 });
    const [wholeScores] = await gpu.read([whole]);
    assert.deepEqual(oneBlock.scores, wholeScores, "one block = knnScores on the whole matrix");
    for (const t of [q, b, sim, bankLabels, whole]) t.release();

    const blockedBank = FeatureSet.from(bankFlat, 17);
    const blockedTest = FeatureSet.from(testFlat, 8);
    assert.equal(blockedBank.blocks.length, 8);
    for (const [blockRows, queryRows] of [[1, 30], [5, 7], [40, 11]]) {
      const blocked = await knnClassify(gpu, blockedBank, blockedTest, classes, {
        k,
        temperature: 0.1,
        blockRows,
        queryRows,
        keepScores: true,
      });
      assert.deepEqual(
        blocked.predictions,
        oneBlock.predictions,
        `GPU blocks of ${blockRows}: classes`,
      );
      assert.deepEqual(
        blocked.scores,
        oneBlock.scores,
        `GPU blocks of ${blockRows}: scores bitwise`,
      );
    }
    const accuracy = await knnAccuracy(gpu, blockedBank, blockedTest, classes, {
      k,
      temperature: 0.1,
      blockRows: 3,
    });
    const correct = oneBlock.predictions.filter((p, i) => p === testFlat.labels[i]).length;
    assert.equal(accuracy, correct / 30);
    // A class signal: well above chance (0.2), so the votes are not noise (measured 0.567).
    assert.ok(accuracy > 0.4, `kNN accuracy ${accuracy}, chance 0.2`);
  },
});

Deno.test({
  name: "knn classify: predictions match a float64 reference (cosine top-k, exp(sim/T) votes)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const [dim, classes, k, temperature] = [16, 4, 10, 0.5];
    const bank = syntheticFeatures(120, dim, classes, 3);
    const test = syntheticFeatures(40, dim, classes, 4);
    const got = await knnClassify(gpu, FeatureSet.from(bank, 13), test, classes, {
      k,
      temperature,
      blockRows: 6,
      keepScores: true,
    });
    const norm = (f: Float32Array, r: number) =>
      Math.sqrt(f.subarray(r * dim, (r + 1) * dim).reduce((s, v) => s + v * v, 0));
    const expected = new Float64Array(40 * classes);
    for (let q = 0; q < 40; q++) {
      const sims = Array.from({ length: 120 }, (_, j) => {
        let dot = 0;
        for (let c = 0; c < dim; c++) {
          dot += test.features[q * dim + c] * bank.features[j * dim + c];
        }
        return dot / (norm(test.features, q) * norm(bank.features, j));
      });
      const order = sims.map((_, j) => j).sort((a, b) => sims[b] - sims[a] || a - b);
      for (const j of order.slice(0, k)) {
        expected[q * classes + bank.labels[j]] += Math.exp(sims[j] / temperature);
      }
    }
    // f32 cosines (|error| ~1e-7) through exp(sim / 0.5); no score is near a tie at this size.
    assertClose(got.scores!, expected, { atol: 1e-5, rtol: 1e-5 }, "scores");
  },
});

Deno.test({
  name: "feature set: blocks, rows, the flat view, and a clear error for inconsistent blocks",
  fn: () => {
    const flat = syntheticFeatures(10, 3, 2, 9);
    const set = FeatureSet.from(flat, 4);
    assert.deepEqual(set.blocks.map((b) => b.length), [12, 12, 6]);
    assert.equal(set.length, 10);
    assert.deepEqual(set.row(5), flat.features.subarray(15, 18));
    assert.deepEqual(set.features, flat.features);
    assert.deepEqual(set.blockRange(2), [8, 10]);
    assert.throws(
      () => new FeatureSet(3, flat.labels, [new Float32Array(12), new Float32Array(18)], 4),
      /2 blocks holding 10 rows of 3 do not hold 10 labelled rows in blocks of 4/,
    );
  },
});

Deno.test({
  name: "linear probe: a blocked feature set trains exactly as the flat one",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const train = syntheticFeatures(96, 8, 3, 11);
    const test = syntheticFeatures(30, 8, 3, 12);
    const options = { epochs: 2, lr: 0.5, batch: 16, seed: 3 };
    const flat = await linearProbe(gpu, train, test, 3, options);
    const blocked = await linearProbe(
      gpu,
      FeatureSet.from(train, 7),
      FeatureSet.from(test, 4),
      3,
      options,
    );
    assert.deepEqual(blocked, flat);
    assert.ok(flat.top1 > 0.45, `probe top-1 ${flat.top1}, chance 0.33`);
  },
});

Deno.test({
  name: "knn classify: bad block sizes and k are refused by name",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const set = syntheticFeatures(10, 4, 2, 1);
    const run = (options: Partial<KnnOptions>) =>
      knnClassify(gpu, set, set, 2, { k: 3, temperature: 0.1, ...options });
    await assert.rejects(run({ blockRows: 0 }), /blockRows = 0 must be a positive integer/);
    await assert.rejects(run({ queryRows: 2.5 }), /queryRows = 2.5 must be a positive integer/);
    await assert.rejects(run({ k: 0 }), /k = 0 must be an integer in 1..1024/);
  },
});

Deno.test({
  name: "evaluate: a backbone's bank extracted and searched in blocks of 5 = in one block; " +
    "the pictures reuse its features",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const backbone = new ResNet(new Context(gpu), {
      arch: "resnet18",
      inChannels: 1,
      smallImage: true,
      widths: [4, 8, 16, 32],
    }, new Rng(2));
    const source = (length: number, seed: number): ImageSource => {
      const rng = new Rng(seed);
      const pixels = Uint8Array.from({ length: length * 64 }, () => Math.floor(rng.next() * 256));
      const labels = Int32Array.from({ length }, (_, i) => i % 3);
      return {
        length,
        classes: 3,
        height: 8,
        width: 8,
        channels: 1,
        mean: [0.5],
        std: [0.25],
        batch: (indices) =>
          Promise.resolve({
            pixels: Uint8Array.from(
              Array.from(indices).flatMap((i) => Array.from(pixels.subarray(i * 64, i * 64 + 64))),
            ),
            labels: Int32Array.from(Array.from(indices), (i) => labels[i]),
          }),
      };
    };
    const train = source(40, 1);
    const test = source(12, 2);
    const indices = Array.from({ length: 40 }, (_, i) => i);
    // Batches of 7 straddle blocks of 5.
    const blocked = await extractFeatures(gpu, backbone, train, indices, 7, undefined, 5);
    const whole = await extractFeatures(gpu, backbone, train, indices, 7);
    assert.equal(blocked.blocks.length, 8);
    assert.equal(whole.blocks.length, 1);
    assert.deepEqual(blocked.features, whole.features);
    assert.deepEqual(blocked.labels, whole.labels);
    const options = {
      knnK: 10,
      knnTemperature: 0.1,
      bankSize: 0,
      testSize: 0,
      probeEpochs: 2,
      probeLr: 0.1,
      probeBatch: 8,
      seed: 1,
      batchSize: 7,
    };
    const one = await evaluateBackbone(gpu, backbone, train, test, options);
    const many = await evaluateBackbone(gpu, backbone, train, test, {
      ...options,
      knnBlockRows: 5,
    });
    assert.equal(many.knnTop1, one.knnTop1);
    assert.equal(many.linearTop1, one.linearTop1);
    assert.equal(many.linearTop5, one.linearTop5);
    // The pictures reuse an evaluation's features (a blocked bank too): the same insight as their
    // own extraction, without a second pass over the images.
    let kept: EvaluatedFeatures | undefined;
    await evaluateBackbone(
      gpu,
      backbone,
      train,
      test,
      { ...options, knnBlockRows: 5, probeEpochs: 0 },
      undefined,
      (features) => kept = features,
    );
    assert.equal(kept!.bank.blocks.length, 8);
    const insightOptions = { ...options, neighbours: 4, mapPoints: 12 };
    const fresh = await inspectBackbone(gpu, backbone, train, test, insightOptions);
    const passes: string[] = [];
    const reused = await inspectBackbone(
      gpu,
      backbone,
      train,
      test,
      { ...insightOptions, features: kept },
      (what) => passes.push(what),
    );
    assert.deepEqual(reused, fresh);
    assert.equal(reused.knnTop1, one.knnTop1);
    assert.deepEqual(passes, ["retrieval", "t-SNE map"]);
    // Features of other images (a smaller bank) are not taken for these.
    const other = await inspectBackbone(gpu, backbone, train, test, {
      ...insightOptions,
      bankSize: 20,
      features: kept,
    }, (what) => passes.push(what));
    assert.ok(passes.includes("features (train)"), passes.join(", "));
    assert.ok(other.neighbours.flat().every((j) => j < 40));
    for (const p of backbone.parameters()) p.value.release();
  },
});
