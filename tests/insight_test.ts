import assert from "node:assert/strict";
import { gpuTest, Rng, testGpu } from "./util.ts";
import {
  confusionMatrix,
  nearestNeighbours,
  perClassAccuracy,
  retrievalQueries,
  tsne,
} from "../models/insight.ts";
import { knnAccuracy, knnClassify } from "../models/evaluate.ts";
import { drawConfusionMatrix, drawRetrievalGrid, retrievalRows } from "../data/pictures.ts";

Deno.test("insight: confusion matrix and per-class accuracy of a made-up example", () => {
  const labels = [0, 0, 1, 1, 1, 2, 2, 2, 2];
  const predicted = [0, 1, 1, 1, 0, 2, 2, 1, 2];
  const matrix = confusionMatrix(labels, predicted, 4);
  assert.deepEqual(matrix, [
    [1, 1, 0, 0],
    [1, 2, 0, 0],
    [0, 1, 3, 0],
    [0, 0, 0, 0],
  ]);
  assert.deepEqual(perClassAccuracy(matrix), [0.5, 2 / 3, 0.75, null]);
  assert.throws(() => confusionMatrix([0], [0, 1], 2), /1 labels but 2 predictions/);
});

/** Float64 reference: cosine similarity of every pair, full sort, ties to the lower index. */
function bruteForceNeighbours(bank: Float32Array, queries: Float32Array, dim: number, k: number) {
  const norm = (v: Float32Array, r: number) =>
    Math.sqrt(Array.from(v.subarray(r * dim, (r + 1) * dim)).reduce((s, x) => s + x * x, 0));
  const rows: number[][] = [];
  for (let q = 0; q < queries.length / dim; q++) {
    const sims = Array.from({ length: bank.length / dim }, (_, j) => {
      let dot = 0;
      for (let c = 0; c < dim; c++) dot += queries[q * dim + c] * bank[j * dim + c];
      return { j, s: dot / (norm(queries, q) * norm(bank, j)) };
    });
    sims.sort((a, b) => b.s - a.s || a.j - b.j);
    rows.push(sims.slice(0, k).map((e) => e.j));
  }
  return rows;
}

Deno.test("insight: retrieval neighbours (300 x 16 bank, 7 queries, k 8) equal a brute-force reference", () => {
  const rng = new Rng(4);
  const dim = 16;
  const bank = rng.normals(300 * dim);
  // Row 120 is a copy of row 40: a tie that must go to the lower index.
  bank.copyWithin(120 * dim, 40 * dim, 41 * dim);
  const queries = rng.normals(7 * dim);
  queries.set(bank.subarray(40 * dim, 41 * dim), 0);
  const { indices, similarities } = nearestNeighbours(bank, queries, dim, 8);
  const expected = bruteForceNeighbours(bank, queries, dim, 8);
  for (let q = 0; q < 7; q++) {
    assert.deepEqual(Array.from(indices.subarray(q * 8, (q + 1) * 8)), expected[q], `query ${q}`);
  }
  assert.deepEqual(Array.from(indices.subarray(0, 2)), [40, 120]);
  assert.ok(Math.abs(similarities[0] - 1) < 1e-6);
  for (let i = 1; i < 8; i++) assert.ok(similarities[i] <= similarities[i - 1]);
});

Deno.test("insight: retrieval queries are one seeded image per class", () => {
  const labels = Int32Array.from({ length: 200 }, (_, i) => (i * 7) % 5);
  const queries = retrievalQueries(labels, 5, 3);
  assert.deepEqual(queries.map((q) => labels[q]), [0, 1, 2, 3, 4]);
  assert.deepEqual(retrievalQueries(labels, 5, 3), queries, "same seed, same queries");
  assert.notDeepEqual(retrievalQueries(labels, 5, 4), queries, "another seed, other queries");
  // No labels (one class): eight distinct random images.
  assert.equal(new Set(retrievalQueries(new Int32Array(50), 1, 0)).size, 8);
});

Deno.test("insight: t-SNE is deterministic per seed and keeps separated clusters apart", () => {
  const rng = new Rng(9);
  const dim = 10;
  const perCluster = 30;
  const points = new Float32Array(3 * perCluster * dim);
  const cluster = new Int32Array(3 * perCluster);
  for (let i = 0; i < 3 * perCluster; i++) {
    cluster[i] = i % 3;
    for (let c = 0; c < dim; c++) {
      points[i * dim + c] = (c === cluster[i] ? 6 : 0) + rng.normal();
    }
  }
  const map = tsne(points, dim, { seed: 1, iterations: 300 });
  assert.deepEqual(Array.from(tsne(points, dim, { seed: 1, iterations: 300 })), Array.from(map));
  assert.notDeepEqual(Array.from(tsne(points, dim, { seed: 2, iterations: 300 })), Array.from(map));
  assert.ok(map.every(Number.isFinite));
  // Each point's nearest point on the map belongs to its own cluster.
  let agree = 0;
  for (let i = 0; i < 3 * perCluster; i++) {
    let best = -1;
    let bestDistance = Infinity;
    for (let j = 0; j < 3 * perCluster; j++) {
      const d = (map[2 * i] - map[2 * j]) ** 2 + (map[2 * i + 1] - map[2 * j + 1]) ** 2;
      if (j !== i && d < bestDistance) [best, bestDistance] = [j, d];
    }
    if (cluster[best] === cluster[i]) agree++;
  }
  assert.ok(agree >= 0.95 * 3 * perCluster, `${agree}/${3 * perCluster} nearest on the map agree`);
});

Deno.test({
  name: "insight: kNN predictions (bank 64, test 40, k 5) that the confusion matrix counts match " +
    "a float64 vote and knnAccuracy",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rng = new Rng(13);
    const dim = 8;
    const classes = 4;
    const bank = {
      features: rng.normals(64 * dim),
      dim,
      labels: Int32Array.from({ length: 64 }, (_, i) => i % classes),
    };
    const test = {
      features: rng.normals(40 * dim),
      dim,
      labels: Int32Array.from({ length: 40 }, (_, i) => (i * 3) % classes),
    };
    const options = { k: 5, temperature: 0.1 };
    const { predictions: predicted } = await knnClassify(gpu, bank, test, classes, options);
    const neighbours = bruteForceNeighbours(bank.features, test.features, dim, 64);
    for (let q = 0; q < 40; q++) {
      const scores = new Array(classes).fill(0);
      const cos = (j: number) => {
        let dot = 0;
        let a = 0;
        let b = 0;
        for (let c = 0; c < dim; c++) {
          dot += test.features[q * dim + c] * bank.features[j * dim + c];
          a += test.features[q * dim + c] ** 2;
          b += bank.features[j * dim + c] ** 2;
        }
        return dot / Math.sqrt(a * b);
      };
      for (const j of neighbours[q].slice(0, 5)) scores[bank.labels[j]] += Math.exp(cos(j) / 0.1);
      const expected = scores.indexOf(Math.max(...scores));
      assert.equal(predicted[q], expected, `test row ${q}: scores ${scores}`);
    }
    const correct = predicted.filter((p, i) => p === test.labels[i]).length;
    assert.equal(correct / 40, await knnAccuracy(gpu, bank, test, classes, options));
  },
});

Deno.test("pictures: retrieval rows mark other-class neighbours red, the query blue", () => {
  const image = { height: 2, width: 2, channels: 1 };
  const rows = retrievalRows({
    queryPixels: new Uint8Array(4).fill(200),
    neighbourPixels: Uint8Array.from([...new Array(4).fill(10), ...new Array(4).fill(20)]),
    image,
    queryLabels: [3],
    neighbourLabels: [[3, 5]],
    labelled: true,
  });
  assert.deepEqual(rows[0].map((c) => c.role), ["query", "same", "other"]);
  assert.equal(rows[0][2].pixels[0], 20);
  const picture = drawRetrievalGrid(rows, image, 4);
  // Cells are 2*4 + 2*3 = 14 px; gap 4; the neighbours start after an extra 8 px.
  const at = (x: number, y: number) =>
    Array.from(picture.data.subarray((y * picture.width + x) * 3, (y * picture.width + x) * 3 + 3));
  assert.deepEqual(at(4, 4), [40, 90, 230], "query frame");
  assert.deepEqual(at(4 + 3, 4 + 3), [200, 200, 200], "query pixel");
  const third = 4 + 2 * (14 + 4) + 8;
  assert.deepEqual(at(third, 4), [230, 20, 20], "other-class frame");
  assert.deepEqual(at(third + 3, 4 + 3), [20, 20, 20], "other-class pixel");
});

Deno.test("pictures: confusion matrix cells are shaded by their share of the row", () => {
  const picture = drawConfusionMatrix([[3, 1], [0, 4]]);
  assert.equal(picture.width, picture.height);
  const labelSpace = 10 + 22;
  const pixel = (row: number, col: number) => {
    const x = labelSpace + col * 30 + 1;
    const y = labelSpace + row * 30 + 1;
    return Array.from(
      picture.data.subarray((y * picture.width + x) * 3, (y * picture.width + x) * 3 + 3),
    );
  };
  assert.deepEqual(pixel(1, 1), [8, 48, 107], "share 1: darkest");
  assert.deepEqual(pixel(1, 0), [255, 255, 255], "share 0: white");
  assert.deepEqual(pixel(0, 1), [
    Math.round(255 - 0.25 * 247),
    Math.round(255 - 0.25 * 207),
    Math.round(255 - 0.25 * 148),
  ]);
});
