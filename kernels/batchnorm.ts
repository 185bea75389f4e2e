/**
 * Batch normalisation over a [rows, C] matrix (BatchNorm2d on NHWC activations with
 * rows = N*H*W, BatchNorm1d with rows = N): training forward (batch statistics, running-stat
 * update), evaluation forward, and the training backward, each optionally fused with a ReLU (the
 * forwards also with a residual added before it: a ResNet block's end in the same pass).
 * All reductions are deterministic two-pass column reductions (see batchnorm.wgsl).
 */
import {
  ceilDiv,
  type Gpu,
  grid1d,
  type Kernel,
  packUniforms,
  type Tensor,
} from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";
import { cpuPlans, planDevice } from "./plan.ts";

/** The matrix a BatchNorm sees, and its hyper-parameters (PyTorch defaults). */
export interface BatchNormShape {
  rows: number;
  channels: number;
  /** Added to the variance before the square root (default 1e-5). */
  eps?: number;
  /** Weight of the batch statistic in the running average (default 0.1). */
  momentum?: number;
}

const DEFAULT_EPS = 1e-5;
const DEFAULT_MOMENTUM = 0.1;
const WORKGROUP_THREADS = 256;
/** Rows one thread of stats_partial holds in registers per step (CHUNK in the WGSL). */
const STATS_CHUNK = 8;
/** Threads per workgroup of stats_final (one per channel). */
const STATS_FINAL_THREADS = 64;
/** Enough workgroups in a partial pass to fill a large GPU; more only adds partials to merge. */
const TARGET_PARTIAL_WORKGROUPS = 512;
/**
 * Partial-pass workgroups per core on a CPU adapter: there each workgroup's tree merge and partial
 * cost as much as many rows, and 512 small blocks made the backward 1.7-3.2x slower.
 */
const PARTIAL_WORKGROUPS_PER_CPU_SLOT = 8;

/** How many workgroups a partial pass aims for on this device. */
function partialWorkgroups(gpu: Gpu): number {
  const device = planDevice(gpu);
  return cpuPlans(device)
    ? PARTIAL_WORKGROUPS_PER_CPU_SLOT * device.parallelSlots
    : TARGET_PARTIAL_WORKGROUPS;
}
const ELEMENTS_PER_WORKGROUP = WORKGROUP_THREADS * 4;

/** Storage bindings 1..15 of batchnorm.wgsl; batchnorm_vec4.wgsl uses a subset, same numbers. */
const BINDINGS = [
  "x",
  "gamma",
  "beta",
  "mean",
  "invStd",
  "runningMean",
  "runningVar",
  "partials",
  "y",
  "dy",
  "reluOut",
  "gradSums",
  "dgamma",
  "dbeta",
  "dx",
  "residual",
] as const;
const BATCHNORM = kernelFile("batchnorm", BINDINGS);
const BATCHNORM_VEC4 = kernelFile("batchnorm_vec4", BINDINGS);
type BindingName = typeof BINDINGS[number];

/** How a column reduction over [rows, C] is split into workgroups. */
interface Layout {
  /** Channels per workgroup (a power of two from 4 to 64). */
  tileChannels: number;
  channelTiles: number;
  rowsPerBlock: number;
  numBlocks: number;
}

/**
 * Pick the channel tile (wide enough for coalesced reads, no wider than needed) and the row
 * blocks (enough workgroups to fill the GPU, each row block a whole number of thread steps).
 */
function reductionLayout(
  rows: number,
  channels: number,
  rowsPerStep: number,
  targetWorkgroups: number,
): Layout {
  let tileChannels = 4;
  while (tileChannels < 64 && tileChannels < channels) tileChannels *= 2;
  const lanes = WORKGROUP_THREADS / tileChannels;
  const channelTiles = ceilDiv(channels, tileChannels);
  return {
    tileChannels,
    channelTiles,
    ...rowBlocks(rows, lanes * rowsPerStep, channelTiles, targetWorkgroups),
  };
}

/**
 * Row blocks of a partial pass: enough blocks that `tiles` column tiles of them reach the target
 * workgroups, each block a whole number of `step` rows.
 */
function rowBlocks(
  rows: number,
  step: number,
  tiles: number,
  targetWorkgroups: number,
): { rowsPerBlock: number; numBlocks: number } {
  const maxBlocks = Math.max(1, ceilDiv(rows, step));
  const wantedBlocks = Math.min(maxBlocks, Math.max(1, ceilDiv(targetWorkgroups, tiles)));
  const rowsPerBlock = ceilDiv(ceilDiv(rows, wantedBlocks), step) * step;
  return { rowsPerBlock, numBlocks: Math.max(1, ceilDiv(rows, rowsPerBlock)) };
}

/**
 * The row blocks of a vec4 partial pass over `columns` vec4 columns: up to 16 columns per
 * workgroup (at least 16 row lanes), blocks as in {@link reductionLayout}.
 */
function vec4ReductionLayout(
  rows: number,
  columns: number,
  targetWorkgroups: number,
): { tileColumns: number; columnTiles: number; rowsPerBlock: number; numBlocks: number } {
  let tileColumns = 1;
  while (tileColumns < 16 && tileColumns < columns) tileColumns *= 2;
  const lanes = WORKGROUP_THREADS / tileColumns;
  const columnTiles = ceilDiv(columns, tileColumns);
  return { tileColumns, columnTiles, ...rowBlocks(rows, lanes, columnTiles, targetWorkgroups) };
}

/** Where a call's statistics and partials sit when several views share the tensors. */
interface ViewPlacement {
  /** Index of the first statistic in mean / inv_std. */
  statOffset?: number;
  /** stats_final: views to merge, each numBlocks partials. */
  groups?: number;
  /** stats_partial: index of the first block this call writes. */
  blockOffset?: number;
}

function uniforms(
  s: BatchNormShape,
  layout?: Pick<Layout, "rowsPerBlock" | "numBlocks">,
  placement: ViewPlacement = {},
): ArrayBuffer {
  return packUniforms([
    ["u32", s.rows],
    ["u32", s.channels],
    ["u32", layout?.rowsPerBlock ?? 0],
    ["u32", layout?.numBlocks ?? 0],
    ["u32", s.rows * s.channels],
    ["f32", s.eps ?? DEFAULT_EPS],
    ["f32", s.momentum ?? DEFAULT_MOMENTUM],
    ["u32", placement.statOffset ?? 0],
    ["u32", placement.groups ?? 1],
    ["u32", placement.blockOffset ?? 0],
    ["u32", 0],
    ["u32", 0],
  ]);
}

function kernel(
  gpu: Gpu,
  entryPoint: string,
  constants: Record<string, number>,
): Kernel<BindingName> {
  return gpu.kernel(BATCHNORM, { entryPoint, constants });
}

/** batchnorm_vec4.wgsl: 256 threads x 4 vec4s each = 4096 floats per workgroup. */
const VEC4_FLOATS_PER_WORKGROUP = 256 * 4 * 4;

/**
 * The elementwise passes (normalize, input_grad): the vec4 variant when the channel count allows
 * (a quarter of the loads), otherwise the scalar one; with the matching grid for one view of
 * `s.rows` rows. The vec4 variant takes stacked views as grid z (`allViews`), the scalar one
 * needs a dispatch per view.
 */
function elementwisePass(
  gpu: Gpu,
  entryPoint: "normalize" | "input_grad",
  constants: Record<string, number>,
  s: BatchNormShape,
): { kernel: Kernel<BindingName>; workgroups: [number, number]; allViews: boolean } {
  if (s.channels % 4 === 0) {
    // Each thread's vec4s lie WORKGROUP_THREADS apart: one channel per thread when that stride is
    // a multiple of the vec4 columns.
    const sameChannel = WORKGROUP_THREADS % (s.channels / 4) === 0 ? 1 : 0;
    return {
      kernel: gpu.kernel(BATCHNORM_VEC4, {
        entryPoint,
        constants: { ...constants, SAME_CHANNEL: sameChannel },
      }),
      workgroups: grid1d(
        Math.ceil(s.rows * s.channels / VEC4_FLOATS_PER_WORKGROUP),
        gpu.limits.maxComputeWorkgroupsPerDimension,
      ),
      allViews: true,
    };
  }
  return {
    kernel: kernel(gpu, entryPoint, constants),
    workgroups: elementwiseGrid(gpu, s),
    allViews: false,
  };
}

function checkShape(name: string, s: BatchNormShape, minRows: number): void {
  if (!Number.isInteger(s.rows) || s.rows < minRows) {
    throw new Error(
      `${name}: rows must be an integer >= ${minRows}, got ${s.rows}` +
        (minRows > 1 ? " (batch statistics need more than one value per channel)" : ""),
    );
  }
  if (!Number.isInteger(s.channels) || s.channels < 1) {
    throw new Error(`${name}: channels must be a positive integer, got ${s.channels}`);
  }
  if (s.rows * s.channels >= 2 ** 32) throw new Error(`${name}: rows * channels exceeds 2^32`);
  if ((s.eps ?? DEFAULT_EPS) < 0) throw new Error(`${name}: eps must be >= 0`);
}

function checkSizes(name: string, s: BatchNormShape, tensors: Record<string, Tensor>): void {
  for (const [label, t] of Object.entries(tensors)) {
    const perChannel = !["x", "y", "dy", "dx", "reluOutput", "residual"].includes(label);
    const want = perChannel ? s.channels : s.rows * s.channels;
    if (t.size !== want) {
      throw new Error(
        `${name}: ${label} has shape [${t.shape}] (${t.size} values), expected ${want} ` +
          (perChannel ? `(channels)` : `(rows ${s.rows} x channels ${s.channels})`),
      );
    }
    if (t.dtype !== "f32") throw new Error(`${name}: ${label} must be f32`);
  }
}

/** WebGPU forbids binding one buffer as both read-only and writable in a dispatch. */
function checkNotInPlace(name: string, output: [string, Tensor], inputs: Record<string, Tensor>) {
  for (const [label, t] of Object.entries(inputs)) {
    if (t.buffer === output[1].buffer) {
      throw new Error(
        `${name}: ${output[0]} shares a buffer with ${label} (in place is unsupported)`,
      );
    }
  }
}

function elementwiseGrid(gpu: Gpu, s: BatchNormShape): [number, number] {
  return grid1d(
    ceilDiv(s.rows * s.channels, ELEMENTS_PER_WORKGROUP),
    gpu.limits.maxComputeWorkgroupsPerDimension,
  );
}

/**
 * Training-mode forward: normalise with this batch's mean and biased variance, write
 * saveMean / saveInvStd (1/sqrt(var + eps)) for the backward, and update the running statistics
 * in place, PyTorch-style: running = (1 - momentum) * running + momentum * batch, with the
 * unbiased variance (rows / (rows - 1)) for runningVar.
 */
export function batchNormTrainForward(
  gpu: Gpu,
  x: Tensor,
  gamma: Tensor,
  beta: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  y: Tensor,
  saveMean: Tensor,
  saveInvStd: Tensor,
  s: BatchNormShape,
  options: TrainForwardOptions = {},
): void {
  const name = "batchNormTrainForward";
  checkShape(name, s, 2);
  const groups = options.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1 || s.rows % groups !== 0) {
    throw new Error(`${name}: ${s.rows} rows do not split into ${groups} views`);
  }
  const view = { ...s, rows: s.rows / groups };
  checkShape(name, view, 2);
  const residual = options.residual;
  checkSizes(name, s, {
    x,
    gamma,
    beta,
    runningMean,
    runningVar,
    y,
    ...(residual ? { residual } : {}),
  });
  for (const [label, t] of [["saveMean", saveMean], ["saveInvStd", saveInvStd]] as const) {
    if (t.size !== groups * s.channels || t.dtype !== "f32") {
      throw new Error(
        `${name}: ${label} has shape [${t.shape}], expected ${groups * s.channels} f32 values ` +
          `(views ${groups} x channels ${s.channels})`,
      );
    }
  }
  checkNotInPlace(name, ["y", y], { x, gamma, beta, ...(residual ? { residual } : {}) });
  const part = (t: Tensor, g: number) => groups === 1 ? t : t.rowBlock(g * view.rows, view.rows);
  const target = partialWorkgroups(gpu);
  // With C % 4 == 0 the partial pass reads vec4s (a quarter of the loads; its own row blocks).
  const vec4 = s.channels % 4 === 0
    ? vec4ReductionLayout(view.rows, s.channels / 4, target)
    : undefined;
  const scalar = reductionLayout(view.rows, s.channels, STATS_CHUNK, target);
  const layout = vec4 ?? scalar;
  const numBlocks = layout.numBlocks;
  const partials = gpu.empty([groups * numBlocks, 3, s.channels], "f32", "batchnorm partials");
  if (vec4) {
    // One dispatch for every view (grid z), each view's blocks after the previous view's.
    gpu.dispatch(
      gpu.kernel(BATCHNORM_VEC4, {
        entryPoint: "stats_partial",
        constants: { TILE_C4: vec4.tileColumns },
      }),
      {
        uniforms: uniforms(view, layout),
        storage: { x, partials },
        workgroups: [vec4.columnTiles, numBlocks, groups],
      },
    );
  } else {
    for (let g = 0; g < groups; g++) {
      gpu.dispatch(kernel(gpu, "stats_partial", { TILE_C: scalar.tileChannels }), {
        uniforms: uniforms(view, layout, { blockOffset: g * numBlocks }),
        storage: { x: part(x, g), partials },
        workgroups: [scalar.channelTiles, numBlocks],
      });
    }
  }
  // One pass merges every view's statistics (each view's running update in view order).
  gpu.dispatch(kernel(gpu, "stats_final", {}), {
    uniforms: uniforms(view, layout, { groups }),
    storage: { partials, mean: saveMean, invStd: saveInvStd, runningMean, runningVar },
    workgroups: [ceilDiv(s.channels, STATS_FINAL_THREADS)],
  });
  const pass = elementwisePass(gpu, "normalize", normalizeConstants(options, false), view);
  // Without RESIDUAL the binding is never read, but it is statically used: bind x.
  const tensors = { x, y, residual: residual ?? x };
  const perChannel = { gamma, beta, mean: saveMean, invStd: saveInvStd };
  if (pass.allViews) {
    gpu.dispatch(pass.kernel, {
      uniforms: uniforms(view, layout),
      storage: { ...tensors, ...perChannel },
      workgroups: [...pass.workgroups, groups],
    });
  } else {
    for (let g = 0; g < groups; g++) {
      gpu.dispatch(pass.kernel, {
        uniforms: uniforms(view, layout, { statOffset: g * s.channels }),
        storage: {
          x: part(x, g),
          y: part(y, g),
          residual: part(tensors.residual, g),
          ...perChannel,
        },
        workgroups: pass.workgroups,
      });
    }
  }
  partials.release();
}

/**
 * Options of the forward passes: a fused ReLU, and a tensor of x's shape added before it (the
 * shortcut of a ResNet block): y = relu(bn(x) + residual) in one pass.
 */
export interface ForwardOptions {
  relu?: boolean;
  residual?: Tensor;
}

/** The training forward's options: those of every forward, and stacked views. */
export interface TrainForwardOptions extends ForwardOptions {
  /**
   * x holds this many views' rows one after another (default 1): each is normalised with its
   * own statistics, saveMean / saveInvStd hold groups x C (view after view), and the running
   * statistics take view 1's batch, then view 2's, as separate calls would.
   */
  groups?: number;
}

function normalizeConstants(options: ForwardOptions, fromVariance: boolean) {
  return {
    RELU: options.relu ? 1 : 0,
    FROM_VARIANCE: fromVariance ? 1 : 0,
    RESIDUAL: options.residual ? 1 : 0,
  };
}

/** Evaluation-mode forward: y = (x - runningMean) / sqrt(runningVar + eps) * gamma + beta. */
export function batchNormEvalForward(
  gpu: Gpu,
  x: Tensor,
  gamma: Tensor,
  beta: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  y: Tensor,
  s: BatchNormShape,
  options: ForwardOptions = {},
): void {
  const name = "batchNormEvalForward";
  checkShape(name, s, 1);
  const residual = options.residual;
  checkSizes(name, s, {
    x,
    gamma,
    beta,
    runningMean,
    runningVar,
    y,
    ...(residual ? { residual } : {}),
  });
  checkNotInPlace(name, ["y", y], { x, gamma, beta, ...(residual ? { residual } : {}) });
  const pass = elementwisePass(gpu, "normalize", normalizeConstants(options, true), s);
  gpu.dispatch(pass.kernel, {
    uniforms: uniforms(s),
    storage: {
      x,
      gamma,
      beta,
      mean: runningMean,
      invStd: runningVar,
      y,
      residual: residual ?? x,
    },
    workgroups: pass.workgroups,
  });
}

/** The backward's options. */
export interface BackwardOptions {
  /** The forward fused a ReLU: its output, which masks dy where it was not positive. */
  reluOutput?: Tensor;
  /** Add to dgamma / dbeta instead of overwriting them (micro-batches, stacked views). */
  accumulate?: boolean;
  /** Index of this call's first statistic in saveMean / saveInvStd (a view's, default 0). */
  statOffset?: number;
  /**
   * x, dy and dx hold this many views' rows one after another (default 1), normalised apart
   * in the forward: each view's backward uses its own statistics (row g of saveMean /
   * saveInvStd), and dgamma / dbeta take view 1's sums, then view 2's, as separate calls would.
   */
  groups?: number;
}

/**
 * Training-mode backward from the forward's saveMean / saveInvStd: dx (overwritten) and
 * dgamma / dbeta (overwritten, or added to with `accumulate`). When the forward fused a ReLU,
 * pass its output as `reluOutput` so dy is masked where the output was not positive.
 */
export function batchNormBackward(
  gpu: Gpu,
  x: Tensor,
  dy: Tensor,
  gamma: Tensor,
  saveMean: Tensor,
  saveInvStd: Tensor,
  dx: Tensor,
  dgamma: Tensor,
  dbeta: Tensor,
  s: BatchNormShape,
  options: BackwardOptions = {},
): void {
  const name = "batchNormBackward";
  checkShape(name, s, 1);
  const reluOutput = options.reluOutput;
  const statOffset = options.statOffset ?? 0;
  const groups = options.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1 || s.rows % groups !== 0) {
    throw new Error(`${name}: ${s.rows} rows do not split into ${groups} views`);
  }
  checkSizes(name, s, {
    x,
    dy,
    gamma,
    dx,
    dgamma,
    dbeta,
    ...(reluOutput ? { reluOutput } : {}),
  });
  for (const [label, t] of [["saveMean", saveMean], ["saveInvStd", saveInvStd]] as const) {
    if (
      t.size < statOffset + groups * s.channels || statOffset % s.channels !== 0 ||
      t.dtype !== "f32"
    ) {
      throw new Error(
        `${name}: ${label} has shape [${t.shape}], expected f32 statistics of ` +
          `${groups} x ${s.channels} channels from index ${statOffset}`,
      );
    }
  }
  checkNotInPlace(name, ["dx", dx], { x, dy, gamma, ...(reluOutput ? { reluOutput } : {}) });
  const view = { ...s, rows: s.rows / groups };
  if (s.channels % 4 !== 0 && groups > 1) {
    // The scalar passes take one view per dispatch: one call per view, summing in view order.
    for (let g = 0; g < groups; g++) {
      const part = (t: Tensor) => t.rowBlock(g * view.rows, view.rows);
      batchNormBackward(
        gpu,
        part(x),
        part(dy),
        gamma,
        saveMean,
        saveInvStd,
        part(dx),
        dgamma,
        dbeta,
        view,
        {
          reluOutput: reluOutput ? part(reluOutput) : undefined,
          accumulate: options.accumulate || g > 0,
          statOffset: statOffset + g * s.channels,
        },
      );
    }
    return;
  }
  checkShape(name, view, 1);
  const target = partialWorkgroups(gpu);
  const layout = reductionLayout(view.rows, s.channels, 1, target);
  // With C % 4 == 0 the partial pass reads vec4s (a quarter of the loads; its own row blocks)
  // and takes every view in one dispatch (grid z).
  const vec4 = s.channels % 4 === 0
    ? vec4ReductionLayout(view.rows, s.channels / 4, target)
    : undefined;
  const numBlocks = vec4?.numBlocks ?? layout.numBlocks;
  const relu = reluOutput ? 1 : 0;
  const partials = gpu.empty([groups * numBlocks, 2, s.channels], "f32", "batchnorm grad partials");
  const gradSums = gpu.empty([groups, 2, s.channels], "f32", "batchnorm grad sums");
  const params = uniforms(view, vec4 ? { ...layout, ...vec4 } : layout, { statOffset, groups });
  // Without a fused ReLU the mask binding is never read, but it is statically used: bind dy.
  const mask = reluOutput ?? dy;
  const partialStorage = { x, dy, reluOut: mask, mean: saveMean, invStd: saveInvStd, partials };
  if (vec4) {
    gpu.dispatch(
      gpu.kernel(BATCHNORM_VEC4, {
        entryPoint: "grad_partial",
        constants: { TILE_C4: vec4.tileColumns, RELU: relu },
      }),
      {
        uniforms: params,
        storage: partialStorage,
        workgroups: [vec4.columnTiles, vec4.numBlocks, groups],
      },
    );
  } else {
    gpu.dispatch(kernel(gpu, "grad_partial", { TILE_C: layout.tileChannels, RELU: relu }), {
      uniforms: params,
      storage: partialStorage,
      workgroups: [layout.channelTiles, layout.numBlocks],
    });
  }
  gpu.dispatch(
    kernel(gpu, "grad_final", {
      TILE_C: layout.tileChannels,
      ACCUMULATE: options.accumulate ? 1 : 0,
    }),
    {
      uniforms: params,
      storage: { partials, gradSums, dgamma, dbeta },
      workgroups: [layout.channelTiles],
    },
  );
  const pass = elementwisePass(gpu, "input_grad", { RELU: relu }, view);
  gpu.dispatch(pass.kernel, {
    uniforms: params,
    storage: {
      x,
      dy,
      reluOut: mask,
      gamma,
      mean: saveMean,
      invStd: saveInvStd,
      gradSums,
      dx,
    },
    workgroups: pass.allViews ? [...pass.workgroups, groups] : pass.workgroups,
  });
  partials.release();
  gradSums.release();
}
