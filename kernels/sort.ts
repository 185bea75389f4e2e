/** Stable per-row bitonic sort (ascending keys, carrying column indices) of any row length. */
import { ceilDiv, type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const SORT = kernelFile("sort", [
  "x",
  "scratchKeys",
  "scratchIndex",
  "outKeys",
  "outIndex",
  "nextKeys",
  "nextIndex",
]);

/** The longest tile one workgroup sorts (2 x 4 bytes per element: 32 KiB of workgroup memory). */
const MAX_TILE = 4096;
/** Threads per workgroup (WG in sort.wgsl). */
const WORKGROUP = 64;

/** Options for {@link sortRows}. */
export interface SortOptions {
  /** Keys are keyScale * x (default 1; -2 turns cosine similarities into distances exactly). */
  keyScale?: number;
  /** Give column r of row r the key +inf, so a similarity row's positive ranks last. */
  maskDiagonal?: boolean;
  /** Elements per workgroup tile (a power of two); defaults to the most workgroup memory allows.
   * Tests lower it to exercise the global merge passes and selection levels on small rows. */
  tileElements?: number;
}

/** The largest tile (power of two, <= 4096) whose keys and indices fit in workgroup memory. */
export function maxSortTile(gpu: Gpu): number {
  const fit = Math.floor(gpu.limits.maxComputeWorkgroupStorageSize / 8);
  let tile = 1;
  while (tile * 2 <= Math.min(fit, MAX_TILE)) tile *= 2;
  return tile;
}

function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * Sort every row of `x` [rows, cols] ascending by (keyScale * x, column): ties keep column order.
 * Writes the first m ranks: `outKeys` [rows, m] (f32 keys) and `outIndex` [rows, m] (u32 columns),
 * 1 <= m <= cols. Rows longer than one tile sort in several dispatches (global merge passes).
 * When m is small (2 * nextPow2(m) fits a tile and the row), the truncated bitonic sort keeps only
 * the m leading ranks and does far less work; its output is identical to the full sort's prefix.
 */
export function sortRows(
  gpu: Gpu,
  x: Tensor,
  outKeys: Tensor,
  outIndex: Tensor,
  options: SortOptions = {},
): void {
  if (x.shape.length !== 2 || x.dtype !== "f32") {
    throw new Error(`sortRows: x must be an f32 [rows, cols] matrix, got ${x.dtype} [${x.shape}]`);
  }
  const [rows, cols] = x.shape;
  if (cols < 1) throw new Error("sortRows: rows must have at least one column");
  const outCols = outKeys.shape[1];
  if (outKeys.shape.length !== 2 || outKeys.shape[0] !== rows || outKeys.dtype !== "f32") {
    throw new Error(
      `sortRows: outKeys must be f32 [${rows}, m], got ${outKeys.dtype} [${outKeys.shape}]`,
    );
  }
  if (outCols < 1 || outCols > cols) {
    throw new Error(
      `sortRows: outKeys keeps ${outCols} ranks; rows have ${cols} (need 1..${cols})`,
    );
  }
  if (outIndex.dtype !== "u32" || outIndex.shape.join() !== outKeys.shape.join()) {
    throw new Error(
      `sortRows: outIndex must be u32 [${outKeys.shape}], got ${outIndex.dtype} [${outIndex.shape}]`,
    );
  }
  const maxTile = maxSortTile(gpu);
  const tile = options.tileElements ?? maxTile;
  if (!(tile >= 2 && tile <= maxTile && (tile & (tile - 1)) === 0)) {
    throw new Error(`sortRows: tileElements ${tile} must be a power of two in 2..${maxTile}`);
  }
  const padded = nextPowerOfTwo(cols);
  const maxPerDim = gpu.limits.maxComputeWorkgroupsPerDimension;
  const params = (block = 0, stride = 0, tilesOut = 0, width = 0) =>
    packUniforms([
      ["u32", rows],
      ["u32", cols],
      ["u32", padded],
      ["u32", outCols],
      ["u32", options.maskDiagonal ? 1 : 0],
      ["f32", options.keyScale ?? 1],
      ["u32", block],
      ["u32", stride],
      ["u32", tilesOut],
      ["u32", width],
    ]);

  // Few ranks wanted: the truncated sort does far less work (see sort.wgsl).
  const run = Math.max(2, nextPowerOfTwo(outCols));
  if (2 * run <= Math.min(tile, padded)) {
    selectLeadingRanks(gpu, x, outKeys, outIndex, { rows, padded, tile, run, params });
    return;
  }

  if (padded <= tile) {
    // Whole rows fit one workgroup: size the tile to the row, so small rows use little memory.
    const kernel = gpu.kernel(SORT, {
      entryPoint: "sort_rows_in_tile",
      substitute: { TILE: padded, RUN: 2 },
    });
    gpu.dispatch(kernel, {
      uniforms: params(),
      storage: { x, outKeys, outIndex },
      workgroups: grid1d(rows, maxPerDim),
    });
    return;
  }

  const kernel = (entryPoint: string) =>
    gpu.kernel(SORT, { entryPoint, substitute: { TILE: tile, RUN: 2 } });
  const scratchKeys = gpu.empty([rows, padded], "u32", "sort scratch keys");
  const scratchIndex = gpu.empty([rows, padded], "u32", "sort scratch indices");
  const scratch = { scratchKeys, scratchIndex };
  const tileGrid = grid1d(rows * (padded / tile), maxPerDim);
  gpu.dispatch(kernel("sort_tiles"), {
    uniforms: params(),
    storage: { x, ...scratch },
    workgroups: tileGrid,
  });
  for (let block = 2 * tile; block <= padded; block *= 2) {
    for (let stride = block / 2; stride >= tile; stride /= 2) {
      gpu.dispatch(kernel("merge_global"), {
        uniforms: params(block, stride),
        storage: scratch,
        workgroups: grid1d(ceilDiv(rows * padded / 2, WORKGROUP), maxPerDim),
      });
    }
    if (block < padded) {
      gpu.dispatch(kernel("merge_tiles"), {
        uniforms: params(),
        storage: scratch,
        workgroups: tileGrid,
      });
    } else {
      const tilesOut = ceilDiv(outCols, tile);
      gpu.dispatch(kernel("merge_tiles_final"), {
        uniforms: params(0, 0, tilesOut),
        storage: { ...scratch, outKeys, outIndex },
        workgroups: grid1d(rows * tilesOut, maxPerDim),
      });
    }
  }
  scratchKeys.release();
  scratchIndex.release();
}

interface SelectPlan {
  rows: number;
  padded: number;
  tile: number;
  run: number;
  params: (block?: number, stride?: number, tilesOut?: number, width?: number) => ArrayBuffer;
}

/** The first outCols ranks by the truncated bitonic sort: per tile, then level by level. */
function selectLeadingRanks(
  gpu: Gpu,
  x: Tensor,
  outKeys: Tensor,
  outIndex: Tensor,
  plan: SelectPlan,
): void {
  const { rows, padded, tile, run, params } = plan;
  const maxPerDim = gpu.limits.maxComputeWorkgroupsPerDimension;
  const kernel = (entryPoint: string, tileLength: number) =>
    gpu.kernel(SORT, { entryPoint, substitute: { TILE: tileLength, RUN: run } });
  if (padded <= tile) {
    gpu.dispatch(kernel("select_rows_in_tile", padded), {
      uniforms: params(),
      storage: { x, outKeys, outIndex },
      workgroups: grid1d(rows, maxPerDim),
    });
    return;
  }
  // Each level keeps `run` winners per tile of the level below.
  const level = (width: number) => ({
    keys: gpu.empty([rows, width], "u32", "selection keys"),
    index: gpu.empty([rows, width], "u32", "selection indices"),
  });
  let width = (padded / tile) * run;
  let source = level(width);
  gpu.dispatch(kernel("select_tiles", tile), {
    uniforms: params(),
    storage: { x, nextKeys: source.keys, nextIndex: source.index },
    workgroups: grid1d(rows * (padded / tile), maxPerDim),
  });
  while (width > tile) {
    const tiles = width / tile;
    const next = level(tiles * run);
    gpu.dispatch(kernel("select_runs", tile), {
      uniforms: params(0, 0, 0, width),
      storage: {
        scratchKeys: source.keys,
        scratchIndex: source.index,
        nextKeys: next.keys,
        nextIndex: next.index,
      },
      workgroups: grid1d(rows * tiles, maxPerDim),
    });
    source.keys.release();
    source.index.release();
    source = next;
    width = tiles * run;
  }
  gpu.dispatch(kernel("select_runs_final", width), {
    uniforms: params(0, 0, 0, width),
    storage: { scratchKeys: source.keys, scratchIndex: source.index, outKeys, outIndex },
    workgroups: grid1d(rows, maxPerDim),
  });
  source.keys.release();
  source.index.release();
}
