/**
 * Layers with explicit forward/backward over the kernels (llm.c style: no autograd engine).
 * A training forward pushes what its backward needs onto the layer's own stack, so one network
 * can run forward on several batches (both views) before the backward passes pop them in reverse.
 * Parameter gradients accumulate (+=) until `zeroGrads`, which is how micro-batches accumulate.
 */
import { type Gpu, Tensor } from "../runtime/gpu.ts";
import type { Rng } from "../runtime/random.ts";
import { fill } from "../kernels/elementwise.ts";
import { matmul } from "../kernels/matmul.ts";
import {
  conv2dBiasGrad,
  conv2dForward,
  conv2dInputGrad,
  conv2dOutputSize,
  type Conv2dShape,
  conv2dWeightGrad,
} from "../kernels/conv2d.ts";
import {
  globalAvgPoolBackward,
  globalAvgPoolForward,
  maxPoolBackward,
  maxPoolForward,
  maxPoolOutputSize,
  type PoolShape,
} from "../kernels/pool.ts";
import {
  batchNormBackward,
  batchNormEvalForward,
  batchNormTrainForward,
} from "../kernels/batchnorm.ts";

/**
 * How a forward pass runs:
 * - `train`: batch statistics, running statistics updated, activations kept for backward;
 * - `no-grad-train`: batch statistics but nothing updated or kept (the target network);
 * - `eval`: running statistics, nothing kept (evaluation, embedding).
 */
export type Mode = "train" | "no-grad-train" | "eval";

/** What every layer shares: the GPU, the mode, and the arena that owns activations. */
export class Context {
  mode: Mode = "train";
  /**
   * How many views a batch holds, stacked along the batch axis: BatchNorm takes the statistics of
   * each view's rows apart (as separate forwards of each view would), every other layer runs
   * once on the stack (one dispatch instead of one per view).
   */
  viewGroups = 1;
  private activations: Tensor[] = [];
  constructor(readonly gpu: Gpu) {}

  /** A new activation tensor, released by {@link releaseActivations} at the end of the step. */
  activation(shape: number[], dtype: "f32" | "u32" = "f32"): Tensor {
    const t = this.gpu.empty(shape, dtype);
    this.activations.push(t);
    return t;
  }

  /** Return every activation to the pool (after the step's backward is encoded). */
  releaseActivations(): void {
    for (const t of this.activations) t.release();
    this.activations = [];
  }

  get keepsForBackward(): boolean {
    return this.mode === "train";
  }
}

/** A trainable tensor with its gradient and how checkpoints and LARS treat it. */
export interface Parameter {
  /** torchvision-style name, e.g. `layer1.0.conv1.weight`. */
  name: string;
  value: Tensor;
  grad: Tensor;
  /** LARS exclusion (METHOD.md): BatchNorm weights/biases and all biases. */
  excludeFromLars: boolean;
  /** Conv weights are HWIO here and OIHW in torchvision checkpoints. */
  layout: "hwio" | "plain";
}

/** A non-trained state tensor (BatchNorm running statistics). */
export interface StateTensor {
  name: string;
  value: Tensor;
}

/** Anything that owns parameters and state. */
export interface Module {
  parameters(): Parameter[];
  states(): StateTensor[];
}

/** Counts of samples seen by each BatchNorm (torchvision's `num_batches_tracked`). */
export interface BatchCounter {
  name: string;
  count: number;
}

function newParameter(
  gpu: Gpu,
  name: string,
  values: Float32Array,
  shape: number[],
  excludeFromLars: boolean,
  layout: "hwio" | "plain" = "plain",
): Parameter {
  return {
    name,
    value: gpu.upload(values, shape),
    grad: gpu.zeros(shape),
    excludeFromLars,
    layout,
  };
}

/**
 * Bytes from one tensor's start to the next in a flat buffer: a multiple of every device's
 * storage-binding offset alignment (256 on most GPUs, 32 on lavapipe), so each tensor still binds
 * on its own, and the layout is the same on every device.
 */
const FLAT_ALIGN_BYTES = 256;

/**
 * Where each tensor of one flat buffer lives, in elements. Tensors too many for one buffer (one
 * binding holds at most the adapter's maxStorageBufferBindingSize: 128 MiB on lavapipe, less than
 * ResNet-50's parameters) are split into groups, a flat buffer each, in order.
 */
export interface FlatLayout {
  names: string[];
  offsets: number[];
  sizes: number[];
  /** Elements in the whole buffer (the last tensor's slot padded to the alignment). */
  length: number;
  /** Index of this group's first tensor among all the tensors flattened together. */
  first: number;
}

/** One group of tensors moved into one buffer: the whole buffer and a view per tensor, in order. */
export interface FlatTensors {
  layout: FlatLayout;
  flat: Tensor;
  views: Tensor[];
}

/**
 * Lay tensors out in flat buffers of at most `maxGroupBytes` each (greedy, in order, so a list's
 * first tensors are grouped the same whatever follows them).
 */
function flatLayouts(
  gpu: Gpu,
  tensors: { name: string; value: Tensor }[],
  maxGroupBytes: number,
): FlatLayout[] {
  const align = Math.max(FLAT_ALIGN_BYTES, gpu.limits.minStorageBufferOffsetAlignment) / 4;
  const maxLength = Math.floor(maxGroupBytes / 4);
  const layouts: FlatLayout[] = [];
  let current: FlatLayout | undefined;
  tensors.forEach(({ name, value }, i) => {
    if (value.dtype !== "f32") throw new Error(`flat storage: ${name} is not f32`);
    const slot = Math.max(align, Math.ceil(value.size / align) * align);
    if (slot > maxLength) {
      throw new Error(
        `flat storage: ${name} needs ${4 * slot} bytes, over the ${maxGroupBytes}-byte limit ` +
          "of one flat buffer",
      );
    }
    if (!current || current.length + slot > maxLength) {
      current = { names: [], offsets: [], sizes: [], length: 0, first: i };
      layouts.push(current);
    }
    current.names.push(name);
    current.offsets.push(current.length);
    current.sizes.push(value.size);
    current.length += slot;
  });
  return layouts;
}

/** A zero-filled flat buffer of `layout` and its views in the given shapes. */
export function flatZeros(gpu: Gpu, layout: FlatLayout, shapes: number[][]): FlatTensors {
  const flat = gpu.zeros([layout.length]);
  const views = layout.offsets.map((offset, i) => {
    const end = layout.offsets[i + 1] ?? layout.length;
    return new Tensor(
      gpu,
      [...shapes[i]],
      "f32",
      flat.buffer,
      4 * offset,
      false,
      4 * (end - offset),
    );
  });
  return { layout, flat, views };
}

/** Copy tensors into views of one new flat buffer (in encode order) and release them. */
function moveIntoFlat(gpu: Gpu, layout: FlatLayout, tensors: Tensor[]): FlatTensors {
  const moved = flatZeros(gpu, layout, tensors.map((t) => t.shape));
  const encoder = gpu.currentEncoder();
  tensors.forEach((t, i) => {
    if (t.byteLength > 0) {
      encoder.copyBufferToBuffer(
        t.buffer,
        t.byteOffset,
        moved.flat.buffer,
        4 * layout.offsets[i],
        t.byteLength,
      );
    }
    t.release();
  });
  return moved;
}

/** One group of parameters after {@link flattenParameters}: values and gradients, a buffer each. */
export interface FlatParameters {
  layout: FlatLayout;
  values: Tensor;
  grads: Tensor;
}

/**
 * Move parameters' values and gradients into flat buffers (one per group of at most
 * `maxGroupBytes`, by default the adapter's storage binding limit; the same layout for values and
 * gradients; each tensor starts at a multiple of 256 bytes) and point the parameters at their
 * views, so one dispatch per group can zero every gradient or update every tensor. The parameters
 * must not be in flat storage yet.
 */
export function flattenParameters(
  gpu: Gpu,
  parameters: Parameter[],
  maxGroupBytes = gpu.maxBindingBytes,
): FlatParameters[] {
  return flatLayouts(gpu, parameters, maxGroupBytes).map((layout) => {
    const group = parameters.slice(layout.first, layout.first + layout.names.length);
    const values = moveIntoFlat(gpu, layout, group.map((p) => p.value));
    const grads = moveIntoFlat(gpu, layout, group.map((p) => p.grad));
    group.forEach((p, i) => {
      p.value = values.views[i];
      p.grad = grads.views[i];
    });
    return { layout, values: values.flat, grads: grads.flat };
  });
}

/** Move state tensors (BatchNorm running statistics) into flat buffers, like parameters. */
export function flattenStates(
  gpu: Gpu,
  states: StateTensor[],
  maxGroupBytes = gpu.maxBindingBytes,
): { layout: FlatLayout; values: Tensor }[] {
  return flatLayouts(gpu, states, maxGroupBytes).map((layout) => {
    const group = states.slice(layout.first, layout.first + layout.names.length);
    const values = moveIntoFlat(gpu, layout, group.map((s) => s.value));
    group.forEach((s, i) => {
      s.value = values.views[i];
    });
    return { layout, values: values.flat };
  });
}

/**
 * Whether the groups `prefix` lay out their tensors exactly as the first ones of `layouts` (same
 * names, sizes and groups, hence the same offsets): then the first `prefix[g].length` elements of
 * group g's buffers correspond element by element (every group but the last one whole).
 */
export function isLayoutPrefix(prefix: FlatLayout[], layouts: FlatLayout[]): boolean {
  if (prefix.length > layouts.length) return false;
  return prefix.every((p, g) => {
    const layout = layouts[g];
    const last = g === prefix.length - 1;
    return p.first === layout.first && p.names.length <= layout.names.length &&
      (last || p.names.length === layout.names.length) &&
      p.names.every((name, i) =>
        name === layout.names[i] && p.sizes[i] === layout.sizes[i] &&
        p.offsets[i] === layout.offsets[i]
      ) &&
      (layout.offsets[p.names.length] ?? layout.length) === p.length;
  });
}

/** Set every parameter gradient of a module to zero. */
export function zeroGrads(gpu: Gpu, module: Module): void {
  for (const p of module.parameters()) fill(gpu, p.grad, 0);
}

/** 2-D convolution over NHWC activations, weight HWIO, Kaiming fan-in normal init. */
export class Conv2d implements Module {
  readonly weight: Parameter;
  readonly bias: Parameter | undefined;
  private saved: { x: Tensor; shape: Conv2dShape }[] = [];

  constructor(
    private ctx: Context,
    name: string,
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number,
    readonly stride: number,
    readonly padding: number,
    rng: Rng,
    withBias = false,
  ) {
    const fanIn = inChannels * kernelSize * kernelSize;
    const std = Math.sqrt(2 / fanIn);
    const count = fanIn * outChannels;
    const w = new Float32Array(count);
    for (let i = 0; i < count; i++) w[i] = std * rng.normal();
    this.weight = newParameter(
      ctx.gpu,
      `${name}.weight`,
      w,
      [kernelSize, kernelSize, inChannels, outChannels],
      false,
      "hwio",
    );
    if (withBias) {
      this.bias = newParameter(ctx.gpu, `${name}.bias`, new Float32Array(outChannels), [
        outChannels,
      ], true);
    }
  }

  private shapeFor(x: Tensor): Conv2dShape {
    const [batch, inHeight, inWidth, channels] = x.shape;
    if (x.shape.length !== 4 || channels !== this.inChannels) {
      throw new Error(
        `${this.weight.name}: expected NHWC input with ${this.inChannels} channels, got [${x.shape}]`,
      );
    }
    return {
      batch,
      inHeight,
      inWidth,
      inChannels: this.inChannels,
      outChannels: this.outChannels,
      kernelSize: this.kernelSize,
      stride: this.stride,
      padding: this.padding,
    };
  }

  forward(x: Tensor): Tensor {
    const shape = this.shapeFor(x);
    const { outHeight, outWidth } = conv2dOutputSize(shape);
    const y = this.ctx.activation([shape.batch, outHeight, outWidth, this.outChannels]);
    conv2dForward(this.ctx.gpu, x, this.weight.value, this.bias?.value ?? null, y, shape);
    if (this.ctx.keepsForBackward) this.saved.push({ x, shape });
    return y;
  }

  /** Accumulate weight (and bias) gradients; return dx unless `inputGrad` is false. */
  backward(dy: Tensor, inputGrad = true): Tensor | null {
    const saved = this.saved.pop();
    if (!saved) throw new Error(`${this.weight.name}: backward without a saved forward`);
    const { x, shape } = saved;
    const gpu = this.ctx.gpu;
    conv2dWeightGrad(gpu, x, dy, this.weight.grad, shape, { accumulate: true });
    if (this.bias) conv2dBiasGrad(gpu, dy, this.bias.grad, shape, { accumulate: true });
    if (!inputGrad) return null;
    const dx = this.ctx.activation(x.shape);
    conv2dInputGrad(gpu, dy, this.weight.value, dx, shape);
    return dx;
  }

  parameters(): Parameter[] {
    return this.bias ? [this.weight, this.bias] : [this.weight];
  }
  states(): StateTensor[] {
    return [];
  }
}

/**
 * BatchNorm over the last dimension (2d on NHWC activations, 1d on [N, C]), optionally with the
 * following ReLU fused. PyTorch semantics: eps 1e-5, momentum 0.1, unbiased running variance.
 */
export class BatchNorm implements Module {
  readonly weight: Parameter;
  readonly bias: Parameter;
  readonly runningMean: StateTensor;
  readonly runningVar: StateTensor;
  readonly counter: BatchCounter;
  /** Throwaway running statistics for `no-grad-train` forwards, which must not update state. */
  private scratchStats: [Tensor, Tensor];
  private saved: {
    x: Tensor;
    y: Tensor;
    mean: Tensor;
    invStd: Tensor;
    rows: number;
    /** Stacked views, each normalised apart. */
    groups: number;
  }[] = [];

  constructor(
    private ctx: Context,
    name: string,
    readonly channels: number,
    readonly relu: boolean,
    readonly eps = 1e-5,
    readonly momentum = 0.1,
  ) {
    const gpu = ctx.gpu;
    this.weight = newParameter(gpu, `${name}.weight`, new Float32Array(channels).fill(1), [
      channels,
    ], true);
    this.bias = newParameter(gpu, `${name}.bias`, new Float32Array(channels), [channels], true);
    this.runningMean = { name: `${name}.running_mean`, value: gpu.zeros([channels]) };
    this.runningVar = {
      name: `${name}.running_var`,
      value: gpu.upload(new Float32Array(channels).fill(1), [channels]),
    };
    this.counter = { name: `${name}.num_batches_tracked`, count: 0 };
    this.scratchStats = [gpu.zeros([channels]), gpu.zeros([channels])];
  }

  /**
   * y = bn(x), then + `residual` (a tensor of x's shape: a ResNet block's shortcut, fused into
   * the same pass), then the ReLU when the layer has one; the backward masks by this y.
   */
  forward(x: Tensor, residual?: Tensor): Tensor {
    const c = this.channels;
    if (x.shape[x.shape.length - 1] !== c) {
      throw new Error(`${this.weight.name}: expected ${c} channels last, got [${x.shape}]`);
    }
    if (residual && residual.size !== x.size) {
      throw new Error(
        `${this.weight.name}: residual [${residual.shape}] does not match the input [${x.shape}]`,
      );
    }
    const rows = x.size / c;
    const gpu = this.ctx.gpu;
    const y = this.ctx.activation(x.shape);
    const shape = { rows, channels: c, eps: this.eps, momentum: this.momentum };
    const x2 = x.reshape([rows, c]);
    const y2 = y.reshape([rows, c]);
    const options = { relu: this.relu, residual: residual?.reshape([rows, c]) };
    if (this.ctx.mode === "eval") {
      batchNormEvalForward(
        gpu,
        x2,
        this.weight.value,
        this.bias.value,
        this.runningMean.value,
        this.runningVar.value,
        y2,
        shape,
        options,
      );
      return y;
    }
    const train = this.ctx.mode === "train";
    const [runMean, runVar] = train
      ? [this.runningMean.value, this.runningVar.value]
      : this.scratchStats;
    // Stacked views are normalised apart, each with its own statistics (mean and invStd hold
    // one row of C per view).
    const groups = this.ctx.viewGroups;
    const mean = this.ctx.activation([groups, c]);
    const invStd = this.ctx.activation([groups, c]);
    batchNormTrainForward(
      gpu,
      x2,
      this.weight.value,
      this.bias.value,
      runMean,
      runVar,
      y2,
      mean,
      invStd,
      shape,
      { ...options, groups },
    );
    if (train) {
      this.counter.count += groups;
      this.saved.push({ x: x2, y: y2, mean, invStd, rows, groups });
    }
    return y;
  }

  backward(dy: Tensor): Tensor {
    const saved = this.saved.pop();
    if (!saved) throw new Error(`${this.weight.name}: backward without a saved forward`);
    const c = this.channels;
    const dx = this.ctx.activation(dy.shape);
    // Stacked views: each view's backward uses its own statistics; the sums add view by view.
    batchNormBackward(
      this.ctx.gpu,
      saved.x,
      dy.reshape([saved.rows, c]),
      this.weight.value,
      saved.mean,
      saved.invStd,
      dx.reshape([saved.rows, c]),
      this.weight.grad,
      this.bias.grad,
      { rows: saved.rows, channels: c, eps: this.eps, momentum: this.momentum },
      { reluOutput: this.relu ? saved.y : undefined, accumulate: true, groups: saved.groups },
    );
    return dx;
  }

  parameters(): Parameter[] {
    return [this.weight, this.bias];
  }
  states(): StateTensor[] {
    return [this.runningMean, this.runningVar];
  }
}

/**
 * How a Linear layer starts: torch's default (weight and bias uniform in +-1/sqrt(in)), or
 * weights Normal(0, std) with biases 0 (the released code's heads: mmcv's kaiming_init and
 * normal_init).
 */
export type LinearInit = { kind: "torch-default" } | { kind: "normal"; std: number };

/** Fully connected layer, weight [out, in] as in torch; init as torch's default (uniform). */
export class Linear implements Module {
  readonly weight: Parameter;
  readonly bias: Parameter | undefined;
  private saved: Tensor[] = [];
  private ones: Tensor | undefined;

  constructor(
    private ctx: Context,
    name: string,
    readonly inFeatures: number,
    readonly outFeatures: number,
    rng: Rng,
    withBias = true,
    init: LinearInit = { kind: "torch-default" },
  ) {
    const bound = 1 / Math.sqrt(inFeatures);
    const w = init.kind === "normal"
      ? rng.normals(inFeatures * outFeatures, init.std)
      : Float32Array.from({ length: inFeatures * outFeatures }, () => rng.uniform(-bound, bound));
    this.weight = newParameter(ctx.gpu, `${name}.weight`, w, [outFeatures, inFeatures], false);
    if (withBias) {
      const b = new Float32Array(outFeatures);
      if (init.kind === "torch-default") {
        for (let i = 0; i < b.length; i++) b[i] = rng.uniform(-bound, bound);
      }
      this.bias = newParameter(ctx.gpu, `${name}.bias`, b, [outFeatures], true);
    }
  }

  forward(x: Tensor): Tensor {
    if (x.shape.length !== 2 || x.shape[1] !== this.inFeatures) {
      throw new Error(`${this.weight.name}: expected [N, ${this.inFeatures}], got [${x.shape}]`);
    }
    const y = this.ctx.activation([x.shape[0], this.outFeatures]);
    matmul(this.ctx.gpu, x, this.weight.value, y, { transposeB: true, bias: this.bias?.value });
    if (this.ctx.keepsForBackward) this.saved.push(x);
    return y;
  }

  backward(dy: Tensor, inputGrad = true): Tensor | null {
    const x = this.saved.pop();
    if (!x) throw new Error(`${this.weight.name}: backward without a saved forward`);
    const gpu = this.ctx.gpu;
    // dW += dyᵀ x ; db += column sums of dy (as onesᵀ dy, a deterministic GEMM).
    matmul(gpu, dy, x, this.weight.grad, { transposeA: true, accumulate: true });
    if (this.bias) {
      const n = dy.shape[0];
      if (!this.ones || this.ones.size !== n) {
        this.ones?.release();
        this.ones = gpu.upload(new Float32Array(n).fill(1), [n, 1]);
      }
      matmul(gpu, this.ones, dy, this.bias.grad.reshape([1, this.outFeatures]), {
        transposeA: true,
        accumulate: true,
      });
    }
    if (!inputGrad) return null;
    const dx = this.ctx.activation(x.shape);
    matmul(gpu, dy, this.weight.value, dx);
    return dx;
  }

  parameters(): Parameter[] {
    return this.bias ? [this.weight, this.bias] : [this.weight];
  }
  states(): StateTensor[] {
    return [];
  }
}

function poolShapeOf(x: Tensor, who: string): PoolShape {
  if (x.shape.length !== 4) throw new Error(`${who}: expected NHWC input, got [${x.shape}]`);
  const [batch, height, width, channels] = x.shape;
  return { batch, height, width, channels };
}

/** 3x3 stride-2 padding-1 max pool (the ResNet stem), argmax saved for the backward. */
export class MaxPool {
  private saved: { argmax: Tensor; shape: PoolShape }[] = [];
  constructor(private ctx: Context) {}

  forward(x: Tensor): Tensor {
    const shape = poolShapeOf(x, "maxpool");
    const { height, width } = maxPoolOutputSize(shape);
    const outShape = [shape.batch, height, width, shape.channels];
    const y = this.ctx.activation(outShape);
    const argmax = this.ctx.activation(outShape, "u32");
    maxPoolForward(this.ctx.gpu, x, y, argmax, shape);
    if (this.ctx.keepsForBackward) this.saved.push({ argmax, shape });
    return y;
  }

  backward(dy: Tensor): Tensor {
    const saved = this.saved.pop();
    if (!saved) throw new Error("maxpool: backward without a saved forward");
    const { shape } = saved;
    const dx = this.ctx.activation([shape.batch, shape.height, shape.width, shape.channels]);
    maxPoolBackward(this.ctx.gpu, dy, saved.argmax, dx, shape);
    return dx;
  }
}

/** Global average pool [N, H, W, C] -> [N, C]. */
export class GlobalAvgPool {
  private saved: PoolShape[] = [];
  constructor(private ctx: Context) {}

  forward(x: Tensor): Tensor {
    const shape = poolShapeOf(x, "avgpool");
    const y = this.ctx.activation([shape.batch, shape.channels]);
    globalAvgPoolForward(this.ctx.gpu, x, y, shape);
    if (this.ctx.keepsForBackward) this.saved.push(shape);
    return y;
  }

  backward(dy: Tensor): Tensor {
    const shape = this.saved.pop();
    if (!shape) throw new Error("avgpool: backward without a saved forward");
    const dx = this.ctx.activation([shape.batch, shape.height, shape.width, shape.channels]);
    globalAvgPoolBackward(this.ctx.gpu, dy, dx, shape);
    return dx;
  }
}
