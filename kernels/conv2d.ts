/**
 * 2-D convolution (NHWC activations, HWIO weights): forward, input gradient, weight gradient and
 * bias gradient. All three products are implicit GEMMs on one register-tiled template in
 * `conv2d.wgsl`; this file only validates, binds and dispatches the plans of `plan.ts`.
 */
import {
  type Bindable,
  ceilDiv,
  type Gpu,
  grid1d,
  OPERAND_TEXTURE_WIDTH,
  type Tensor,
} from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";
import {
  convBiasGradSlices,
  convInputGradPhases,
  convTile,
  convWeightGradPlan,
  DEFAULT_TILE,
  operandSource,
  planDevice,
} from "./plan.ts";

/** GEMM operands A and B (buffers, or textures A and B), the bias, and the output. */
const CONV2D = kernelFile("conv2d", ["inA", "inB", "bias", "out", "textureA", "textureB"]);

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
  const tile = convTile(planDevice(gpu), m, s.outChannels, false);
  const operands = gemmOperands(gpu, x, weight);
  const kernel = gpu.kernel(CONV2D, {
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
    storage: {
      inA: bindable(x),
      inB: bindable(weight),
      bias: bindable(bias ?? weight),
      out: bindable(y),
      ...operands.textures,
    },
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
  const { phases, zeroFill } = convInputGradPhases(s);
  const operands = gemmOperands(gpu, dy, weight);
  if (zeroFill) {
    // Kernel smaller than the stride (1x1 stride 2): some pixels get no gradient. Zero all of dx
    // (a fill, far cheaper than running GEMMs with K = 0); the other phases overwrite theirs.
    gpu.currentEncoder().clearBuffer(dx.buffer, dx.byteOffset, dx.byteLength);
  }
  for (const { phaseH, phaseW, m } of phases) {
    const tile = convTile(planDevice(gpu), m, s.inChannels, false);
    const kernel = gpu.kernel(CONV2D, {
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
      // The bias binding is unused by this pass but in the layout: bind weight.
      storage: {
        inA: bindable(dy),
        inB: bindable(weight),
        bias: bindable(weight),
        out: bindable(dx),
        ...operands.textures,
      },
      workgroups: [ceilDiv(m, tile.tileM), ceilDiv(s.inChannels, tile.tileN), 1],
    });
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
  const plan = convWeightGradPlan(planDevice(gpu), m, n, pixels);
  const { tile, slices, sliceLen, laneSlices } = plan;
  const split = slices > 1;
  const operands = gemmOperands(gpu, x, dy);
  const kernel = gpu.kernel(CONV2D, {
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
    storage: {
      inA: bindable(x),
      inB: bindable(dy),
      bias: bindable(dy),
      out: target ?? bindable(dweight),
      ...operands.textures,
    },
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
  const { slices, sliceLen } = convBiasGradSlices(rows);
  const partial = gpu.empty([slices, s.outChannels], "f32", "conv2d bias-grad slices");
  const quads = ceilDiv(s.outChannels, 4);
  const kernel = gpu.kernel(CONV2D, {
    entryPoint: "bias_grad_partial",
    substitute: DEFAULT_TILE.substitute,
    constants: { ...g.constants, SLICES: slices, SLICE_LEN: sliceLen },
  });
  gpu.dispatch(kernel, {
    storage: { inA: bindable(dy), out: partial },
    workgroups: [ceilDiv(quads * slices, 64), 1, 1],
  });
  reduceSlices(gpu, partial, slices, s.outChannels, dbias, options.accumulate ?? false);
  partial.release();
}

// ---- internals ----

/** The textures and overrides of one GEMM dispatch of `main`. */
interface GemmOperands {
  textures: { textureA: GPUTextureView; textureB: GPUTextureView };
  constants: Record<string, number>;
  release(): void;
}

/** Texture copies of A and B when the plan reads textures, else placeholder bindings. */
function gemmOperands(gpu: Gpu, a: Tensor, b: Tensor): GemmOperands {
  const fit = gpu.fitsOperandTexture(a) && gpu.fitsOperandTexture(b);
  if (operandSource(gpu.settings.conv2dOperands, gpu, fit) === "buffer") {
    const placeholder = gpu.placeholderTexture();
    return {
      textures: { textureA: placeholder, textureB: placeholder },
      constants: {},
      release: () => {},
    };
  }
  const textureA = gpu.operandTexture(a);
  const textureB = gpu.operandTexture(b);
  return {
    textures: { textureA: textureA.view, textureB: textureB.view },
    constants: { TEXTURE_OPERANDS: 1, TEXTURE_WIDTH: OPERAND_TEXTURE_WIDTH },
    release: () => {
      textureA.release();
      textureB.release();
    },
  };
}

const PASS_FORWARD = 0;
const PASS_INPUT_GRAD = 1;
const PASS_WEIGHT_GRAD = 2;

/** out (=, or += when accumulate) the sum over slices of partial [slices, length]. */
function reduceSlices(
  gpu: Gpu,
  partial: Tensor,
  slices: number,
  length: number,
  out: Tensor,
  accumulate: boolean,
): void {
  const kernel = gpu.kernel(CONV2D, {
    entryPoint: "reduce_slices",
    substitute: DEFAULT_TILE.substitute,
    constants: { SLICES: slices, REDUCE_LEN: length, ACCUMULATE: accumulate ? 1 : 0 },
  });
  gpu.dispatch(kernel, {
    storage: { inA: partial, out: bindable(out) },
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
 * whole (16-byte padded) buffer when the tensor starts at offset 0, and a view's padded slot
 * (flat parameter storage) when it has one.
 */
function bindable(t: Tensor): Bindable {
  if (t.byteOffset === 0) return t.buffer;
  if ((t.slotBytes ?? t.byteLength) % 16 !== 0) {
    throw new Error(
      `conv2d: a tensor view at byte offset ${t.byteOffset} must hold a multiple of 4 elements ` +
        `(shape [${t.shape}])`,
    );
  }
  return t;
}
