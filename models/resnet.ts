/**
 * torchvision-structured ResNets (18/34/50) with torchvision's parameter names, NHWC activations.
 * Options for small images (3x3 stride-1 stem, no max pool), input channels and stage widths.
 */
import type { Tensor } from "../runtime/gpu.ts";
import type { Rng } from "../runtime/random.ts";
import { addGradients, addMasked, addReluBackward } from "../kernels/residual.ts";
import {
  type BatchCounter,
  BatchNorm,
  Context,
  Conv2d,
  GlobalAvgPool,
  MaxPool,
  type Module,
  type Parameter,
  type StateTensor,
} from "./layers.ts";

/** Architectures with their block type and blocks per stage. */
export const ARCHITECTURES = {
  resnet18: { block: "basic", blocks: [2, 2, 2, 2] },
  resnet34: { block: "basic", blocks: [3, 4, 6, 3] },
  resnet50: { block: "bottleneck", blocks: [3, 4, 6, 3] },
} as const;

/** Architecture names. */
export type Arch = keyof typeof ARCHITECTURES;
/** Every architecture name, in order of depth. */
export const ARCH_NAMES = Object.keys(ARCHITECTURES) as Arch[];

/** What defines a backbone. */
export interface ResNetConfig {
  arch: Arch;
  /** Image channels (1 for MNIST-like data, 3 for colour). */
  inChannels: number;
  /** 3x3 stride-1 stem without max pool, for 28-32 px images. */
  smallImage: boolean;
  /** Widths of the four stages (torchvision: 64, 128, 256, 512); the stem has the first. */
  widths: [number, number, number, number];
}

/** torchvision's widths scaled by a multiplier (rounded, at least 1). */
export function scaledWidths(multiplier: number): [number, number, number, number] {
  return [64, 128, 256, 512].map((w) => Math.max(1, Math.round(w * multiplier))) as [
    number,
    number,
    number,
    number,
  ];
}

interface Block extends Module {
  forward(x: Tensor): Tensor;
  backward(dy: Tensor): Tensor;
  batchNorms(): BatchNorm[];
}

function collect(modules: Module[]): { parameters: Parameter[]; states: StateTensor[] } {
  return {
    parameters: modules.flatMap((m) => m.parameters()),
    states: modules.flatMap((m) => m.states()),
  };
}

/** The shortcut of a block that changes shape: 1x1 conv (stride s) + BatchNorm. */
class Downsample {
  readonly conv: Conv2d;
  readonly bn: BatchNorm;
  constructor(ctx: Context, name: string, inC: number, outC: number, stride: number, rng: Rng) {
    this.conv = new Conv2d(ctx, `${name}.0`, inC, outC, 1, stride, 0, rng);
    this.bn = new BatchNorm(ctx, `${name}.1`, outC, false);
  }
  forward(x: Tensor): Tensor {
    return this.bn.forward(this.conv.forward(x));
  }
  backward(dy: Tensor): Tensor {
    return this.conv.backward(this.bn.backward(dy))!;
  }
}

/**
 * A block's input gradient: the branch's plus the shortcut's, which sees dOut masked by the
 * block's ReLU (out > 0). An identity shortcut takes the mask and the sum in one pass.
 */
function joinGradients(
  ctx: Context,
  dBranch: Tensor,
  dOut: Tensor,
  out: Tensor,
  downsample: Downsample | undefined,
): Tensor {
  const dx = ctx.activation(dBranch.shape);
  if (!downsample) {
    addMasked(ctx.gpu, dBranch, dOut, out, dx);
    return dx;
  }
  const dSum = ctx.activation(out.shape);
  addReluBackward(ctx.gpu, out, dOut, dSum);
  addGradients(ctx.gpu, dBranch, downsample.backward(dSum), dx);
  return dx;
}

/**
 * Two 3x3 convs; out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), the add and the ReLU
 * fused into bn2's pass.
 */
class BasicBlock implements Block {
  static readonly expansion = 1;
  private conv1: Conv2d;
  private bn1: BatchNorm;
  private conv2: Conv2d;
  private bn2: BatchNorm;
  private downsample: Downsample | undefined;
  private saved: Tensor[] = [];

  constructor(
    private ctx: Context,
    name: string,
    inC: number,
    planes: number,
    stride: number,
    rng: Rng,
  ) {
    this.conv1 = new Conv2d(ctx, `${name}.conv1`, inC, planes, 3, stride, 1, rng);
    this.bn1 = new BatchNorm(ctx, `${name}.bn1`, planes, true);
    this.conv2 = new Conv2d(ctx, `${name}.conv2`, planes, planes, 3, 1, 1, rng);
    // Fuses the shortcut add and the block's ReLU (see forward).
    this.bn2 = new BatchNorm(ctx, `${name}.bn2`, planes, true);
    if (stride !== 1 || inC !== planes) {
      this.downsample = new Downsample(ctx, `${name}.downsample`, inC, planes, stride, rng);
    }
  }

  forward(x: Tensor): Tensor {
    const shortcut = this.downsample ? this.downsample.forward(x) : x;
    const h = this.conv2.forward(this.bn1.forward(this.conv1.forward(x)));
    const out = this.bn2.forward(h, shortcut);
    if (this.ctx.keepsForBackward) this.saved.push(out);
    return out;
  }

  backward(dOut: Tensor): Tensor {
    const out = this.saved.pop()!;
    // bn2 masks dOut by its own output (the block's); the shortcut needs the masked dOut too.
    const dBranch = this.conv1.backward(
      this.bn1.backward(this.conv2.backward(this.bn2.backward(dOut))!),
    )!;
    return joinGradients(this.ctx, dBranch, dOut, out, this.downsample);
  }

  private modules(): Module[] {
    const m: Module[] = [this.conv1, this.bn1, this.conv2, this.bn2];
    if (this.downsample) m.push(this.downsample.conv, this.downsample.bn);
    return m;
  }
  parameters(): Parameter[] {
    return collect(this.modules()).parameters;
  }
  states(): StateTensor[] {
    return collect(this.modules()).states;
  }
  batchNorms(): BatchNorm[] {
    return [this.bn1, this.bn2, ...(this.downsample ? [this.downsample.bn] : [])];
  }
}

/** 1x1 reduce, 3x3 (carrying the stride, torchvision v1.5), 1x1 expand by 4. */
class Bottleneck implements Block {
  static readonly expansion = 4;
  private conv1: Conv2d;
  private bn1: BatchNorm;
  private conv2: Conv2d;
  private bn2: BatchNorm;
  private conv3: Conv2d;
  private bn3: BatchNorm;
  private downsample: Downsample | undefined;
  private saved: Tensor[] = [];

  constructor(
    private ctx: Context,
    name: string,
    inC: number,
    planes: number,
    stride: number,
    rng: Rng,
  ) {
    const outC = planes * Bottleneck.expansion;
    this.conv1 = new Conv2d(ctx, `${name}.conv1`, inC, planes, 1, 1, 0, rng);
    this.bn1 = new BatchNorm(ctx, `${name}.bn1`, planes, true);
    this.conv2 = new Conv2d(ctx, `${name}.conv2`, planes, planes, 3, stride, 1, rng);
    this.bn2 = new BatchNorm(ctx, `${name}.bn2`, planes, true);
    this.conv3 = new Conv2d(ctx, `${name}.conv3`, planes, outC, 1, 1, 0, rng);
    // Fuses the shortcut add and the block's ReLU (see forward).
    this.bn3 = new BatchNorm(ctx, `${name}.bn3`, outC, true);
    if (stride !== 1 || inC !== outC) {
      this.downsample = new Downsample(ctx, `${name}.downsample`, inC, outC, stride, rng);
    }
  }

  forward(x: Tensor): Tensor {
    const shortcut = this.downsample ? this.downsample.forward(x) : x;
    const h1 = this.bn1.forward(this.conv1.forward(x));
    const h2 = this.bn2.forward(this.conv2.forward(h1));
    const out = this.bn3.forward(this.conv3.forward(h2), shortcut);
    if (this.ctx.keepsForBackward) this.saved.push(out);
    return out;
  }

  backward(dOut: Tensor): Tensor {
    const out = this.saved.pop()!;
    // bn3 masks dOut by its own output (the block's); the shortcut needs the masked dOut too.
    const dh2 = this.bn2.backward(this.conv3.backward(this.bn3.backward(dOut))!);
    const dBranch = this.conv1.backward(this.bn1.backward(this.conv2.backward(dh2)!))!;
    return joinGradients(this.ctx, dBranch, dOut, out, this.downsample);
  }

  private modules(): Module[] {
    const m: Module[] = [this.conv1, this.bn1, this.conv2, this.bn2, this.conv3, this.bn3];
    if (this.downsample) m.push(this.downsample.conv, this.downsample.bn);
    return m;
  }
  parameters(): Parameter[] {
    return collect(this.modules()).parameters;
  }
  states(): StateTensor[] {
    return collect(this.modules()).states;
  }
  batchNorms(): BatchNorm[] {
    return [this.bn1, this.bn2, this.bn3, ...(this.downsample ? [this.downsample.bn] : [])];
  }
}

/** A ResNet backbone without `fc`: images [N, H, W, C] -> pooled features [N, featureDim]. */
export class ResNet implements Module {
  readonly featureDim: number;
  private conv1: Conv2d;
  private bn1: BatchNorm;
  private maxPool: MaxPool | undefined;
  private blocks: Block[] = [];
  private pool: GlobalAvgPool;

  constructor(readonly ctx: Context, readonly config: ResNetConfig, rng: Rng) {
    const spec = ARCHITECTURES[config.arch];
    const expansion = spec.block === "basic" ? BasicBlock.expansion : Bottleneck.expansion;
    const [stemWidth] = config.widths;
    if (config.smallImage) {
      this.conv1 = new Conv2d(ctx, "conv1", config.inChannels, stemWidth, 3, 1, 1, rng);
    } else {
      this.conv1 = new Conv2d(ctx, "conv1", config.inChannels, stemWidth, 7, 2, 3, rng);
      this.maxPool = new MaxPool(ctx);
    }
    this.bn1 = new BatchNorm(ctx, "bn1", stemWidth, true);
    let inC = stemWidth;
    spec.blocks.forEach((count, stage) => {
      const planes = config.widths[stage];
      for (let i = 0; i < count; i++) {
        const stride = i === 0 && stage > 0 ? 2 : 1;
        const name = `layer${stage + 1}.${i}`;
        this.blocks.push(
          spec.block === "basic"
            ? new BasicBlock(ctx, name, inC, planes, stride, rng)
            : new Bottleneck(ctx, name, inC, planes, stride, rng),
        );
        inC = planes * expansion;
      }
    });
    this.featureDim = inC;
    this.pool = new GlobalAvgPool(ctx);
  }

  forward(images: Tensor): Tensor {
    let h = this.bn1.forward(this.conv1.forward(images));
    if (this.maxPool) h = this.maxPool.forward(h);
    for (const block of this.blocks) h = block.forward(h);
    return this.pool.forward(h);
  }

  /** Backward from the pooled features' gradient; accumulates every parameter gradient. */
  backward(dFeatures: Tensor): void {
    let d = this.pool.backward(dFeatures);
    for (let i = this.blocks.length - 1; i >= 0; i--) d = this.blocks[i].backward(d);
    if (this.maxPool) d = this.maxPool.backward(d);
    this.conv1.backward(this.bn1.backward(d), false);
  }

  parameters(): Parameter[] {
    return [
      ...this.conv1.parameters(),
      ...this.bn1.parameters(),
      ...this.blocks.flatMap((b) => b.parameters()),
    ];
  }
  states(): StateTensor[] {
    return [...this.bn1.states(), ...this.blocks.flatMap((b) => b.states())];
  }
  /** Every BatchNorm's `num_batches_tracked` counter. */
  batchCounters(): BatchCounter[] {
    return [this.bn1, ...this.blocks.flatMap((b) => b.batchNorms())].map((bn) => bn.counter);
  }
}

/** Number of scalars in a module's parameters. */
export function parameterCount(module: Module): number {
  return module.parameters().reduce((n, p) => n + p.value.size, 0);
}
