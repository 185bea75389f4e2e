/**
 * 2-D convolution (NHWC activations, HWIO weights): forward, input gradient, weight gradient and
 * bias gradient. All three products are implicit GEMMs on one register-tiled template in
 * `conv2d.wgsl`; this file only validates, picks a tile shape, binds and dispatches.
 */
import {
  type Bindable,
  ceilDiv,
  type Gpu,
  grid1d,
  OPERAND_TEXTURE_WIDTH,
  type Tensor,
} from "../runtime/gpu.ts";

/** Geometry of one convolution: square kernel, same stride and zero padding on both axes. */
export interface Conv2dShape {
  batch: number;
  inHeight: number;
  inWidth: number;
  inChannels: number;
  outChannels: number;
  kernelSize: number;
  stride: number;
  padding: number;
}

/** Output height and width: floor((in + 2 padding - kernel) / stride) + 1. */
export function conv2dOutputSize(s: Conv2dShape): { outHeight: number; outWidth: number } {
  const outHeight = Math.floor((s.inHeight + 2 * s.padding - s.kernelSize) / s.stride) + 1;
  const outWidth = Math.floor((s.inWidth + 2 * s.padding - s.kernelSize) / s.stride) + 1;
  return { outHeight, outWidth };
}

/** y = conv(x, weight) + bias. x [N,H,W,Cin], weight [K,K,Cin,Cout], bias [Cout] or null. */
export function conv2dForward(
  gpu: Gpu,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  y: Tensor,
  s: Conv2dShape,
): void {
  const g = geometry(s, "conv2dForward");
  expectShape("conv2dForward", "x", x, g.inShape);
  expectShape("conv2dForward", "weight", weight, g.weightShape);
  expectShape("conv2dForward", "y", y, g.outShape);
  if (bias) expectShape("conv2dForward", "bias", bias, [s.outChannels]);
  const m = s.batch * g.outHeight * g.outWidth;
  const tile = chooseTile(gpu, m, s.outChannels, false);
  const operands = gemmOperands(gpu, x, weight);
  const kernel = gpu.kernel("conv2d", {
    substitute: tile.substitute,
    constants: {
      ...g.constants,
      ...operands.constants,
      PASS: PASS_FORWARD,
      HAS_BIAS: bias ? 1 : 0,
      STAGED: tile.staged,
    },
  });
  gpu.dispatch(kernel, {
    // The layout always has the bias binding (overrides do not remove it): bind weight instead.
    storage: [
      bindable(x),
      bindable(weight),
      bindable(bias ?? weight),
      bindable(y),
      ...operands.textures,
    ],
    workgroups: [ceilDiv(m, tile.tileM), ceilDiv(s.outChannels, tile.tileN), 1],
  });
  operands.release();
}

/**
 * dx = dL/dx from dy [N,Ho,Wo,Cout] and weight (dx is overwritten). One GEMM per stride phase
 * (input row and column mod stride), each using only the kernel taps that reach that phase.
 */
export function conv2dInputGrad(
  gpu: Gpu,
  dy: Tensor,
  weight: Tensor,
  dx: Tensor,
  s: Conv2dShape,
): void {
  const g = geometry(s, "conv2dInputGrad");
  expectShape("conv2dInputGrad", "dy", dy, g.outShape);
  expectShape("conv2dInputGrad", "weight", weight, g.weightShape);
  expectShape("conv2dInputGrad", "dx", dx, g.inShape);
  // Kernel taps reaching input rows of a phase: kh = first, first + stride, ... < kernelSize.
  const taps = (phase: number) => {
    const first = (phase + s.padding) % s.stride;
    return first >= s.kernelSize ? 0 : ceilDiv(s.kernelSize - first, s.stride);
  };
  const phases = Array.from({ length: s.stride }, (_, p) => p);
  const operands = gemmOperands(gpu, dy, weight);
  if (phases.some((p) => taps(p) === 0)) {
    // Kernel smaller than the stride (1x1 stride 2): some pixels get no gradient. Zero all of dx
    // (a fill, far cheaper than running GEMMs with K = 0); the other phases overwrite theirs.
    gpu.currentEncoder().clearBuffer(dx.buffer, dx.byteOffset, dx.byteLength);
  }
  for (const phaseH of phases) {
    for (const phaseW of phases) {
      const rows = ceilDiv(s.inHeight - phaseH, s.stride);
      const cols = ceilDiv(s.inWidth - phaseW, s.stride);
      if (rows <= 0 || cols <= 0 || taps(phaseH) * taps(phaseW) === 0) continue;
      const m = s.batch * rows * cols;
      const tile = chooseTile(gpu, m, s.inChannels, false);
      const kernel = gpu.kernel("conv2d", {
        substitute: tile.substitute,
        constants: {
          ...g.constants,
          ...operands.constants,
          PASS: PASS_INPUT_GRAD,
          PHASE_H: phaseH,
          PHASE_W: phaseW,
          STAGED: tile.staged,
        },
      });
      gpu.dispatch(kernel, {
        storage: [
          bindable(dy),
          bindable(weight),
          bindable(weight),
          bindable(dx),
          ...operands.textures,
        ],
        workgroups: [ceilDiv(m, tile.tileM), ceilDiv(s.inChannels, tile.tileN), 1],
      });
    }
  }
  operands.release();
}

/**
 * dweight = dL/dweight from x and dy, overwritten or (accumulate) added. The pixel sum is split
 * into slices whose partial products a second pass adds in a fixed order: deterministic.
 */
export function conv2dWeightGrad(
  gpu: Gpu,
  x: Tensor,
  dy: Tensor,
  dweight: Tensor,
  s: Conv2dShape,
  options: { accumulate?: boolean } = {},
): void {
  const g = geometry(s, "conv2dWeightGrad");
  expectShape("conv2dWeightGrad", "x", x, g.inShape);
  expectShape("conv2dWeightGrad", "dy", dy, g.outShape);
  expectShape("conv2dWeightGrad", "dweight", dweight, g.weightShape);
  const accumulate = options.accumulate ?? false;
  const m = s.kernelSize * s.kernelSize * s.inChannels;
  const n = s.outChannels;
  const pixels = s.batch * g.outHeight * g.outWidth;
  const plan = weightGradPlan(gpu, m, n, pixels);
  const { tile, slices, sliceLen, laneSlices } = plan;
  const split = slices > 1;
  const operands = gemmOperands(gpu, x, dy);
  const kernel = gpu.kernel("conv2d", {
    substitute: tile.substitute,
    constants: {
      ...g.constants,
      ...operands.constants,
      PASS: PASS_WEIGHT_GRAD,
      STAGED: tile.staged,
      SLICE_LEN: sliceLen,
      SPLIT: split ? 1 : 0,
      ACCUMULATE: accumulate ? 1 : 0,
      LANE_SLICES: laneSlices ? 1 : 0,
    },
  });
  const target = split ? gpu.empty([slices, m * n], "f32", "conv2d weight-grad slices") : null;
  gpu.dispatch(kernel, {
    storage: [
      bindable(x),
      bindable(dy),
      bindable(dy),
      target ?? bindable(dweight),
      ...operands.textures,
    ],
    workgroups: [
      ceilDiv(m, tile.tileM),
      ceilDiv(n, tile.tileN),
      laneSlices ? slices / plan.lanesPerSliceGroup : slices,
    ],
  });
  operands.release();
  if (target) {
    reduceSlices(gpu, target, slices, m * n, dweight, accumulate);
    target.release();
  }
}

/** dbias = sum of dy over batch and pixels, overwritten or (accumulate) added; deterministic. */
export function conv2dBiasGrad(
  gpu: Gpu,
  dy: Tensor,
  dbias: Tensor,
  s: Conv2dShape,
  options: { accumulate?: boolean } = {},
): void {
  const g = geometry(s, "conv2dBiasGrad");
  expectShape("conv2dBiasGrad", "dy", dy, g.outShape);
  expectShape("conv2dBiasGrad", "dbias", dbias, [s.outChannels]);
  const rows = s.batch * g.outHeight * g.outWidth;
  // Each invocation sums one column quad over a slice of rows; aim for ~64-row slices, at most
  // 256 of them, so the second pass stays short.
  const slices = Math.max(1, Math.min(256, Math.floor(rows / 64)));
  const sliceLen = ceilDiv(rows, slices);
  const partial = gpu.empty([slices, s.outChannels], "f32", "conv2d bias-grad slices");
  const quads = ceilDiv(s.outChannels, 4);
  const kernel = gpu.kernel("conv2d", {
    entryPoint: "bias_grad_partial",
    substitute: DEFAULT_TILE.substitute,
    constants: { ...g.constants, SLICES: slices, SLICE_LEN: sliceLen },
  });
  gpu.dispatch(kernel, {
    storage: [bindable(dy), null, null, partial],
    workgroups: [ceilDiv(quads * slices, 64), 1, 1],
  });
  reduceSlices(gpu, partial, slices, s.outChannels, dbias, options.accumulate ?? false);
  partial.release();
}

/** How the GEMM tiles get their operands; see `kernels/conv2d.wgsl`. */
export type Conv2dStaging = "auto" | "workgroup" | "direct";

let stagingMode: Conv2dStaging = "auto";

/**
 * Force how the kernels feed their register tiles (tests and benchmarks): "workgroup" stages A
 * and B tiles in workgroup memory (the GPU path), "direct" has every invocation load its own
 * blocks (faster on CPU adapters such as lavapipe, where workgroup memory costs as much to read
 * as global memory), "auto" (the default) picks by adapter.
 */
export function setConv2dStaging(mode: Conv2dStaging): void {
  stagingMode = mode;
}

/** Where the GEMM tiles read their operands A and B from; see `kernels/conv2d.wgsl`. */
export type Conv2dOperands = "auto" | "texture" | "buffer";

let operandMode: Conv2dOperands = "auto";

/**
 * Force where the GEMM kernels read their operands (tests and benchmarks): "texture" copies them
 * into read-only storage textures first (faster on CPU adapters such as lavapipe, which load a
 * texel per lane far faster than a storage-buffer element), "buffer" reads the tensors' buffers,
 * "auto" (the default) picks textures on fallback (CPU) adapters. Operands too big for a texture
 * always use buffers.
 */
export function setConv2dOperands(mode: Conv2dOperands): void {
  operandMode = mode;
}

// ---- internals ----

/** The textures (bindings 5, 6) and overrides of one GEMM dispatch of `main`. */
interface GemmOperands {
  textures: GPUTextureView[];
  constants: Record<string, number>;
  release(): void;
}

/** Texture copies of A and B when the texture path applies, else placeholder bindings. */
function gemmOperands(gpu: Gpu, a: Tensor, b: Tensor): GemmOperands {
  const wanted = operandMode === "texture" || (operandMode === "auto" && gpu.isFallback);
  if (!wanted || !gpu.fitsOperandTexture(a) || !gpu.fitsOperandTexture(b)) {
    const placeholder = gpu.placeholderTexture();
    return { textures: [placeholder, placeholder], constants: {}, release: () => {} };
  }
  const textureA = gpu.operandTexture(a);
  const textureB = gpu.operandTexture(b);
  return {
    textures: [textureA.view, textureB.view],
    constants: { TEXTURE_OPERANDS: 1, TEXTURE_WIDTH: OPERAND_TEXTURE_WIDTH },
    release: () => {
      textureA.release();
      textureB.release();
    },
  };
}

function staged(gpu: Gpu): boolean {
  return stagingMode === "workgroup" || (stagingMode === "auto" && !gpu.isFallback);
}

const PASS_FORWARD = 0;
const PASS_INPUT_GRAD = 1;
const PASS_WEIGHT_GRAD = 2;

/** Workgroup memory per unit of WG_X + WG_Y: TILE_K (16) x 16 floats of 4 bytes. */
const TILE_BYTES_PER_WG_ROW = 16 * 16 * 4;
/**
 * Workgroups the device runs at once: lavapipe runs one per CPU thread; for a GPU, a round
 * number of a few per compute unit.
 */
function parallelSlots(gpu: Gpu): number {
  return gpu.isFallback ? navigator.hardwareConcurrency || 2 : 128;
}

interface TileShape {
  tileM: number;
  tileN: number;
  /** The STAGED override: 1 to stage tiles in workgroup memory, 0 for direct loads. */
  staged: number;
  substitute: Record<string, number>;
}

function tileShape(wgX: number, wgY: number, staged: boolean): TileShape {
  return {
    tileM: 16 * wgY,
    tileN: 16 * wgX,
    staged: staged ? 1 : 0,
    substitute: { WG_X: wgX, WG_Y: wgY },
  };
}

/** For the entry points that do not tile (bias gradient, slice reduction). */
const DEFAULT_TILE = tileShape(4, 4, false);

/**
 * Invocations side by side along N (16 columns each): N with little waste, at most 8, or 16 on
 * CPU adapters when N > 128. There a workgroup covering 256 columns measured up to 2x faster on
 * short-K products such as ResNet-50's 1x1 64 -> 256 expansion (K = 64, where the 16 x 16 block
 * stores weigh most), and within noise on the others.
 */
function columnLanes(n: number, direct: boolean): number {
  if (direct && n > 128) return 16;
  return n > 64 ? 8 : n > 32 ? 4 : n > 16 ? 2 : 1;
}

/**
 * Pick the workgroup's thread grid (and so TILE_M x TILE_N); each invocation owns 16 x 16 outputs.
 * WG_X covers N with little waste. WG_Y (up to 64 invocations, within workgroup memory, counts
 * that are multiples of 8 so no SIMD lane of a CPU adapter idles) minimises a simple time model:
 * waves of workgroups over the device's parallel slots, times the work of one tile, which grows
 * with padding and, when staged, with staging (per multiply-add, staging costs ~0.9 (1/WG_X +
 * 1/WG_Y) of the inner loop's, measured on lavapipe). With `sliced`, K slices supply the
 * parallelism, so only the per-tile work counts.
 */
function chooseTile(gpu: Gpu, m: number, n: number, sliced: boolean): TileShape {
  const wgX = columnLanes(n, !staged(gpu));
  const storageRows = Math.floor(gpu.limits.maxComputeWorkgroupStorageSize / TILE_BYTES_PER_WG_ROW);
  const maxWgY = Math.max(1, Math.min(Math.floor(64 / wgX), 16, storageRows - wgX));
  const tilesN = ceilDiv(n, 16 * wgX);
  const slots = parallelSlots(gpu);
  const staging = staged(gpu) ? 0.9 : 0;
  let best = 8 / wgX;
  let bestTime = Infinity;
  for (let wgY = maxWgY; wgY >= 1; wgY--) {
    if ((wgX * wgY) % 8 !== 0) continue;
    const tiles = ceilDiv(m, 16 * wgY) * tilesN;
    const tileWork = 256 * wgX * wgY * (1 + staging * (1 / wgX + 1 / wgY));
    const time = (sliced ? tiles : ceilDiv(tiles, slots)) * tileWork;
    if (time < bestTime) {
      best = wgY;
      bestTime = time;
    }
  }
  return tileShape(wgX, best, staging > 0);
}

/** How the weight gradient's GEMM (M x N, K = pixels) is tiled and its pixel sum split. */
interface WeightGradPlan {
  tile: TileShape;
  /** K slices in all (each writes one partial product when there is more than one). */
  slices: number;
  /** Pixels per slice, a multiple of 16. */
  sliceLen: number;
  /** Each row of invocations in a workgroup takes its own slice (the LANE_SLICES override). */
  laneSlices: boolean;
  /** Slices per workgroup: WG_Y with lane slices, else 1. */
  lanesPerSliceGroup: number;
}

/** Slices keep at least this many pixels, so the scratch and second pass stay small. */
const MIN_SLICE_PIXELS = 256;

/**
 * Tile and split the weight gradient. Usually a workgroup tiles M x N and grid z runs over K
 * slices. When M fits one invocation's 16 rows (the 3x3 stem on gray images: M = 9; 1x1
 * convolutions of <= 16 input channels) and invocations load directly (CPU adapters), the
 * workgroup's rows of invocations would mostly load rows past M and be discarded; instead each
 * row of invocations takes its own K slice.
 */
function weightGradPlan(gpu: Gpu, m: number, n: number, pixels: number): WeightGradPlan {
  const direct = !staged(gpu);
  const wgX = columnLanes(n, direct);
  const laneRows = Math.max(1, 8 / wgX);
  const laneSlices = direct && m <= 16 && laneRows > 1 &&
    pixels >= MIN_SLICE_PIXELS * laneRows;
  const tile = laneSlices
    ? { ...tileShape(wgX, laneRows, false), tileM: 16 }
    : chooseTile(gpu, m, n, true);
  const lanesPerSliceGroup = laneSlices ? laneRows : 1;
  const tiles = ceilDiv(m, tile.tileM) * ceilDiv(n, tile.tileN);
  // Several waves of workgroups balance the load.
  const wantedSlices = ceilDiv(8 * parallelSlots(gpu) * lanesPerSliceGroup, tiles);
  let slices = Math.max(1, Math.min(wantedSlices, Math.floor(pixels / MIN_SLICE_PIXELS)));
  // The scratch must fit in one binding.
  const maxSlices = Math.floor(gpu.maxBindingBytes / (4 * m * n));
  slices = Math.max(1, Math.min(slices, maxSlices));
  const sliceLen = ceilDiv(ceilDiv(pixels, slices), 16) * 16;
  slices = ceilDiv(pixels, sliceLen);
  // Whole workgroups of lane slices: the last ones may start past the pixels and write zeros.
  if (laneSlices) slices = ceilDiv(slices, lanesPerSliceGroup) * lanesPerSliceGroup;
  return { tile, slices, sliceLen, laneSlices, lanesPerSliceGroup };
}

/** out (=, or += when accumulate) the sum over slices of partial [slices, length]. */
function reduceSlices(
  gpu: Gpu,
  partial: Tensor,
  slices: number,
  length: number,
  out: Tensor,
  accumulate: boolean,
): void {
  const kernel = gpu.kernel("conv2d", {
    entryPoint: "reduce_slices",
    substitute: DEFAULT_TILE.substitute,
    constants: { SLICES: slices, REDUCE_LEN: length, ACCUMULATE: accumulate ? 1 : 0 },
  });
  gpu.dispatch(kernel, {
    storage: [partial, null, null, bindable(out)],
    workgroups: grid1d(
      ceilDiv(ceilDiv(length, 4), 64),
      gpu.limits.maxComputeWorkgroupsPerDimension,
    ),
  });
}

interface Geometry {
  outHeight: number;
  outWidth: number;
  inShape: number[];
  weightShape: number[];
  outShape: number[];
  constants: Record<string, number>;
}

function geometry(s: Conv2dShape, op: string): Geometry {
  for (
    const key of [
      "batch",
      "inHeight",
      "inWidth",
      "inChannels",
      "outChannels",
      "kernelSize",
      "stride",
    ] as const
  ) {
    if (!Number.isInteger(s[key]) || s[key] < 1) {
      throw new Error(`${op}: ${key} must be a positive integer, got ${s[key]}`);
    }
  }
  if (!Number.isInteger(s.padding) || s.padding < 0) {
    throw new Error(`${op}: padding must be a non-negative integer, got ${s.padding}`);
  }
  const { outHeight, outWidth } = conv2dOutputSize(s);
  if (outHeight < 1 || outWidth < 1) {
    throw new Error(
      `${op}: a ${s.kernelSize}x${s.kernelSize} kernel with padding ${s.padding} does not fit ` +
        `a ${s.inHeight}x${s.inWidth} input`,
    );
  }
  return {
    outHeight,
    outWidth,
    inShape: [s.batch, s.inHeight, s.inWidth, s.inChannels],
    weightShape: [s.kernelSize, s.kernelSize, s.inChannels, s.outChannels],
    outShape: [s.batch, outHeight, outWidth, s.outChannels],
    constants: {
      BATCH: s.batch,
      IN_H: s.inHeight,
      IN_W: s.inWidth,
      IN_C: s.inChannels,
      OUT_C: s.outChannels,
      KERNEL: s.kernelSize,
      STRIDE: s.stride,
      PAD: s.padding,
      OUT_H: outHeight,
      OUT_W: outWidth,
    },
  };
}

function expectShape(op: string, name: string, t: Tensor, shape: number[]): void {
  const same = t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]);
  if (!same) throw new Error(`${op}: ${name} has shape [${t.shape}], expected [${shape}]`);
  if (t.dtype !== "f32") throw new Error(`${op}: ${name} must be f32, got ${t.dtype}`);
}

/**
 * The kernels read every tensor as an array of vec4, so a binding must cover whole quads: bind the
 * whole (16-byte padded) buffer when the tensor starts at offset 0.
 */
function bindable(t: Tensor): Bindable {
  if (t.byteOffset === 0) return t.buffer;
  if (t.byteLength % 16 !== 0) {
    throw new Error(
      `conv2d: a tensor view at byte offset ${t.byteOffset} must hold a multiple of 4 elements ` +
        `(shape [${t.shape}])`,
    );
  }
  return t;
}
