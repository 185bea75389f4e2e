import assert from "node:assert/strict";
import { gpuTest, Rng, testGpu } from "./util.ts";
import { maxSortTile, type SortOptions, sortRows } from "../kernels/sort.ts";
import type { Gpu } from "../runtime/gpu.ts";

// A sort moves values without arithmetic (keyScale is a power of two here or 1), so keys and
// indices must match the reference exactly: tolerance zero.

/** Reference: each row's columns ordered by (key, column), NaN after everything, -0 == +0. */
function referenceSort(
  x: Float32Array,
  rows: number,
  cols: number,
  outCols: number,
  options: SortOptions,
): { keys: Float32Array; index: Uint32Array } {
  const keys = new Float32Array(rows * outCols);
  const index = new Uint32Array(rows * outCols);
  const scale = options.keyScale ?? 1;
  const rowKeys = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      rowKeys[c] = options.maskDiagonal && c === r
        ? Infinity
        : Math.fround(scale * x[r * cols + c]);
    }
    const order = Uint32Array.from({ length: cols }, (_, c) => c);
    order.sort((a, b) => {
      const ka = rowKeys[a];
      const kb = rowKeys[b];
      const nanA = Number.isNaN(ka);
      const nanB = Number.isNaN(kb);
      if (nanA !== nanB) return nanA ? 1 : -1;
      if (!nanA && ka !== kb) return ka < kb ? -1 : 1;
      return a - b;
    });
    for (let k = 0; k < outCols; k++) {
      index[r * outCols + k] = order[k];
      keys[r * outCols + k] = rowKeys[order[k]];
    }
  }
  return { keys, index };
}

function assertSorted(
  got: { keys: Float32Array; index: Uint32Array },
  expected: { keys: Float32Array; index: Uint32Array },
  outCols: number,
): void {
  for (let i = 0; i < expected.index.length; i++) {
    const sameKey = got.keys[i] === expected.keys[i] ||
      (Number.isNaN(got.keys[i]) && Number.isNaN(expected.keys[i]));
    if (got.index[i] !== expected.index[i] || !sameKey) {
      const row = Math.floor(i / outCols);
      throw new Error(
        `row ${row}, rank ${i % outCols}: got (key ${got.keys[i]}, column ${got.index[i]}), ` +
          `expected (key ${expected.keys[i]}, column ${expected.index[i]})`,
      );
    }
  }
}

async function runSort(
  gpu: Gpu,
  x: Float32Array,
  rows: number,
  cols: number,
  outCols: number,
  options: SortOptions,
) {
  const tx = gpu.upload(x, [rows, cols]);
  const keys = gpu.empty([rows, outCols]);
  const index = gpu.empty([rows, outCols], "u32");
  sortRows(gpu, tx, keys, index, options);
  const [k, i] = await gpu.read([keys, index]);
  for (const t of [tx, keys, index]) t.release();
  return { keys: k as Float32Array, index: i as Uint32Array };
}

/** Values from a few levels only, so ties are common. */
function tiedValues(rng: Rng, n: number, levels: number): Float32Array {
  return Float32Array.from({ length: n }, () => Math.floor(rng.next() * levels) / levels - 0.5);
}

const cases: {
  rows: number;
  cols: number;
  outCols?: number;
  options: SortOptions;
  ties?: boolean;
}[] = [
  { rows: 1, cols: 1, options: {} },
  { rows: 2, cols: 2, options: { maskDiagonal: true, keyScale: -2 } },
  { rows: 5, cols: 7, options: {}, ties: true },
  { rows: 6, cols: 300, options: { keyScale: -2 }, ties: true },
  { rows: 4, cols: 300, outCols: 10, options: { maskDiagonal: true, keyScale: -2 } },
  // Small tiles force the global merge passes (P = 1024, tile 64: 4 merge levels of 2-5 passes).
  { rows: 3, cols: 1000, options: { tileElements: 64 }, ties: true },
  { rows: 3, cols: 1000, outCols: 100, options: { tileElements: 64, maskDiagonal: true } },
  { rows: 5, cols: 33, options: { tileElements: 2 }, ties: true },
  // Longer than the largest tile on any adapter: P = 8192.
  { rows: 2, cols: 4099, options: {}, ties: true },
  // Few ranks: the truncated sort (selection), in one tile and over several levels.
  { rows: 6, cols: 300, outCols: 1, options: {}, ties: true },
  { rows: 3, cols: 1000, outCols: 10, options: { tileElements: 64 }, ties: true },
  { rows: 3, cols: 1000, outCols: 9, options: { tileElements: 64, maskDiagonal: true } },
  { rows: 5, cols: 33, outCols: 3, options: { tileElements: 8 }, ties: true },
  { rows: 2, cols: 4099, outCols: 7, options: { keyScale: -2 }, ties: true },
];

for (const { rows, cols, outCols = cols, options, ties } of cases) {
  Deno.test({
    name: `sort: ${rows}x${cols} -> first ${outCols} ranks, ${JSON.stringify(options)}${
      ties ? ", many ties" : ""
    }`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(rows * 1009 + cols);
      const x = ties ? tiedValues(rng, rows * cols, 8) : rng.normals(rows * cols);
      const got = await runSort(gpu, x, rows, cols, outCols, options);
      assertSorted(got, referenceSort(x, rows, cols, outCols, options), outCols);
    },
  });
}

Deno.test({
  name: "sort: repeated rows sort identically; NaN, infinities and signed zeros (4x9)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const special = [NaN, Infinity, -Infinity, -0, 0, 1, NaN, -1, 0];
    const rows = 4;
    const cols = special.length;
    const x = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) x.set(special, r * cols);
    for (const options of [{}, { tileElements: 4 }]) {
      const got = await runSort(gpu, x, rows, cols, cols, options);
      assertSorted(got, referenceSort(x, rows, cols, cols, {}), cols);
      // -inf, -1, then the three zeros in column order (-0 ties with +0), 1, +inf, NaN, NaN.
      assert.deepEqual([...got.index.subarray(0, cols)], [2, 7, 3, 4, 8, 5, 1, 0, 6]);
    }
    // The selection path keeps the same order for its leading ranks.
    const firstThree = await runSort(gpu, x, rows, cols, 3, {});
    assertSorted(firstThree, referenceSort(x, rows, cols, 3, {}), 3);
  },
});

Deno.test({
  name: "sort: 4096 rows x 4096 columns, diagonal masked, keys -2x (every row checked)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const n = 4096;
    const x = new Rng(77).array(n * n);
    const options = { maskDiagonal: true, keyScale: -2 };
    const got = await runSort(gpu, x, n, n, n, options);
    assertSorted(got, referenceSort(x, n, n, n, options), n);
  },
});

Deno.test({
  name: "sort: 512 rows x 4096 columns, diagonal masked, keys -2x, first 10 ranks (the loss's use)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const [rows, cols] = [512, 4096];
    const x = new Rng(78).array(rows * cols);
    const options = { maskDiagonal: true, keyScale: -2 };
    const got = await runSort(gpu, x, rows, cols, 10, options);
    assertSorted(got, referenceSort(x, rows, cols, 10, options), 10);
  },
});

Deno.test({
  name: "sort: clear errors for bad shapes and tiles",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const x = gpu.zeros([3, 5]);
    const keys = gpu.empty([3, 6]);
    const index = gpu.empty([3, 6], "u32");
    assert.throws(() => sortRows(gpu, x, keys, index), /keeps 6 ranks; rows have 5/);
    const keys2 = gpu.empty([3, 2]);
    const index2 = gpu.empty([3, 2]);
    assert.throws(() => sortRows(gpu, x, keys2, index2), /outIndex must be u32/);
    const index3 = gpu.empty([3, 2], "u32");
    assert.throws(
      () => sortRows(gpu, x, keys2, index3, { tileElements: 3 }),
      new RegExp(`power of two in 2..${maxSortTile(gpu)}`),
    );
    for (const t of [x, keys, index, keys2, index2, index3]) t.release();
  },
});
