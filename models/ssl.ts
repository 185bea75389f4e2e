/**
 * The BYOL-style online/target pair of METHOD.md and its training step:
 * two views -> online forward both -> target forward both (no grad) -> loss -> backward ->
 * LARS -> EMA. The InfoNCE baseline (SimCLR) uses the online projector of both views instead.
 */
import { type Gpu, Tensor } from "../runtime/gpu.ts";
import { Rng } from "../runtime/random.ts";
import { fill, scale } from "../kernels/elementwise.ts";
import { LarsSegments, larsStepFlat } from "../kernels/optimizer.ts";
import { emaUpdateFlat } from "../kernels/ema.ts";
import { type LossConfig, SslLoss } from "./loss.ts";
import {
  type BatchCounter,
  Context,
  type FlatParameters,
  flattenParameters,
  flattenStates,
  flatZeros,
  isLayoutPrefix,
  type Module,
  type Parameter,
  type StateTensor,
} from "./layers.ts";
import { ResNet, type ResNetConfig } from "./resnet.ts";
import { Mlp } from "./heads.ts";
import { viewsStack } from "./memory.ts";

/** Everything that defines the model and its objective. */
export interface SslModelConfig {
  backbone: ResNetConfig;
  projectorHidden: number;
  projectorOut: number;
  predictorHidden: number;
  loss: LossConfig;
  /**
   * How the projector and predictor Linear layers start: `torch-default` (the default; torch's
   * uniform +-1/sqrt(fan_in)) or `released` (the released code: projector Kaiming-normal fan-in,
   * predictor Normal(0, 0.01), biases 0). The backbone's init is the same either way.
   */
  headInit?: "torch-default" | "released";
}

/** What a recipe (a preset, a benchmark case) says about the model, flat. */
export type SslRecipe =
  & Pick<ResNetConfig, "arch" | "widths" | "smallImage">
  & Omit<SslModelConfig, "backbone">;

/** The model a recipe describes, for images of `inChannels` channels. */
export function sslModelConfig(recipe: SslRecipe, inChannels: number): SslModelConfig {
  return {
    backbone: {
      arch: recipe.arch,
      inChannels,
      smallImage: recipe.smallImage,
      widths: recipe.widths,
    },
    projectorHidden: recipe.projectorHidden,
    projectorOut: recipe.projectorOut,
    predictorHidden: recipe.predictorHidden,
    headInit: recipe.headInit,
    loss: recipe.loss,
  };
}

/** Optimiser settings (METHOD.md "Optimisation"). */
export interface LarsConfig {
  momentum: number;
  weightDecay: number;
  eta: number;
}

/** The two views of one micro-batch; the target may get differently rescaled copies. */
export interface MicroBatch {
  view1: Tensor;
  view2: Tensor;
  targetView1?: Tensor;
  targetView2?: Tensor;
}

/** Backbone + projector (+ predictor for the online branch). */
export class Branch implements Module {
  readonly backbone: ResNet;
  readonly projector: Mlp;
  readonly predictor: Mlp | undefined;

  constructor(
    readonly ctx: Context,
    config: SslModelConfig,
    withPredictor: boolean,
    rng: Rng,
  ) {
    const headInit = config.headInit ?? "torch-default";
    if (headInit !== "torch-default" && headInit !== "released") {
      throw new Error(`headInit "${headInit}" is not "torch-default" or "released"`);
    }
    const released = headInit === "released";
    this.backbone = new ResNet(ctx, config.backbone, rng);
    this.projector = new Mlp(ctx, "projector", {
      inFeatures: this.backbone.featureDim,
      hidden: config.projectorHidden,
      outFeatures: config.projectorOut,
      init: released ? "kaiming-fan-in" : "torch-default",
    }, rng);
    if (withPredictor) {
      this.predictor = new Mlp(ctx, "predictor", {
        inFeatures: config.projectorOut,
        hidden: config.predictorHidden,
        outFeatures: config.projectorOut,
        init: released ? "normal-0.01" : "torch-default",
      }, rng);
    }
  }

  /** Projection, or prediction when `predict` (and the branch has a predictor). */
  forward(images: Tensor, predict: boolean): Tensor {
    const z = this.projector.forward(this.backbone.forward(images));
    return predict && this.predictor ? this.predictor.forward(z) : z;
  }

  /** Backward of the matching forward (calls pop in reverse order of the forwards). */
  backward(dOut: Tensor, predicted: boolean): void {
    const dz = predicted && this.predictor ? this.predictor.backward(dOut) : dOut;
    this.backbone.backward(this.projector.backward(dz));
  }

  parameters(): Parameter[] {
    return [
      ...this.backbone.parameters(),
      ...this.projector.parameters(),
      ...(this.predictor?.parameters() ?? []),
    ];
  }
  states(): StateTensor[] {
    return [
      ...this.backbone.states(),
      ...this.projector.states(),
      ...(this.predictor?.states() ?? []),
    ];
  }
  batchCounters(): BatchCounter[] {
    const heads = [this.projector.bn, ...(this.predictor ? [this.predictor.bn] : [])];
    return [...this.backbone.batchCounters(), ...heads.map((bn) => bn.counter)];
  }
}

/** How an {@link SslModel} stores its parameters. */
export interface SslModelOptions {
  /**
   * Largest flat parameter buffer in bytes (default: the adapter's storage binding limit); a
   * model larger than that is split into several (tests force small groups).
   */
  maxFlatGroupBytes?: number;
  /**
   * Run the two views stacked in one batch (default: wherever the adapter can bind each view's
   * rows on their own and the stacked tensors fit its bindings; false runs each view on its own,
   * as tests compare).
   */
  stackViews?: boolean;
}

/** The online/target pair, its optimizer state and the loss. */
export class SslModel {
  readonly online: Branch;
  readonly target: Branch;
  readonly loss: SslLoss;
  /** LARS velocity per online parameter: views into flat buffers laid out as the values. */
  readonly velocity: Tensor[];
  /** |w| and |g| of every online parameter at the last step (LARS computes them). */
  readonly norms: Tensor;
  private onlineCtx: Context;
  private targetCtx: Context;
  /**
   * Online values, gradients and LARS velocity in flat buffers, grouped to fit one storage
   * binding each (one group for the small presets): one dispatch per group zeroes every gradient,
   * one updates every tensor.
   */
  private onlineGroups: { flat: FlatParameters; velocity: Tensor; segments: LarsSegments }[];
  /** The EMA's tensors: target parameters and states, and the online buffers' matching prefixes. */
  private emaTargets: Tensor[];
  private emaOnlines: Tensor[];
  private stackViews: boolean;

  constructor(
    readonly gpu: Gpu,
    readonly config: SslModelConfig,
    readonly batch: number,
    seed: number,
    readonly lars: LarsConfig,
    options: SslModelOptions = {},
  ) {
    this.stackViews = options.stackViews ?? true;
    this.onlineCtx = new Context(gpu);
    this.targetCtx = new Context(gpu);
    this.targetCtx.mode = "no-grad-train";
    this.online = new Branch(this.onlineCtx, config, true, new Rng(seed));
    // The target starts as a copy: same seed, same initial values, then copied exactly below.
    this.target = new Branch(this.targetCtx, config, false, new Rng(seed));
    // Flat storage: the target mirrors the online backbone and projector, which come first in
    // the online buffers, so the EMA pairs the target's buffers with prefixes of the online ones.
    const groupBytes = options.maxFlatGroupBytes ?? gpu.maxBindingBytes;
    const parameters = this.online.parameters();
    const onlineFlat = flattenParameters(gpu, parameters, groupBytes);
    const targetFlat = flattenParameters(gpu, this.target.parameters(), groupBytes);
    const onlineStates = flattenStates(gpu, this.online.states(), groupBytes);
    const targetStates = flattenStates(gpu, this.target.states(), groupBytes);
    if (
      !isLayoutPrefix(targetFlat.map((g) => g.layout), onlineFlat.map((g) => g.layout)) ||
      !isLayoutPrefix(targetStates.map((g) => g.layout), onlineStates.map((g) => g.layout))
    ) {
      throw new Error("SslModel: the target's tensors are not the online network's first ones");
    }
    const prefix = (flat: Tensor, length: number) =>
      new Tensor(gpu, [length], "f32", flat.buffer, 0, false);
    this.emaTargets = [...targetFlat, ...targetStates].map((g) => g.values);
    this.emaOnlines = [
      ...targetFlat.map((g, i) => prefix(onlineFlat[i].values, g.layout.length)),
      ...targetStates.map((g, i) => prefix(onlineStates[i].values, g.layout.length)),
    ];
    this.copyOnlineToTarget();
    this.loss = new SslLoss(gpu, config.loss, batch, config.projectorOut);
    this.norms = gpu.zeros([2 * parameters.length]);
    const groups = onlineFlat.map((flat) => {
      const { layout } = flat;
      const group = parameters.slice(layout.first, layout.first + layout.names.length);
      const velocity = flatZeros(gpu, layout, group.map((p) => p.value.shape));
      const segments = new LarsSegments(
        gpu,
        group.map((p, i) => ({
          offset: layout.offsets[i],
          size: p.value.size,
          excluded: p.excludeFromLars,
        })),
        layout.length,
        layout.first,
      );
      return { flat, velocity: velocity.flat, segments, views: velocity.views };
    });
    this.onlineGroups = groups;
    this.velocity = groups.flatMap((g) => g.views);
  }

  /** How many flat buffer groups hold the online parameters (one LARS dispatch each). */
  get flatGroups(): number {
    return this.onlineGroups.length;
  }

  /** Make the target an exact copy of the online network (initialisation). */
  copyOnlineToTarget(): void {
    emaUpdateFlat(this.gpu, this.emaTargets, this.emaOnlines, 0);
  }

  /**
   * One optimizer step over `microBatches` (each: the two augmented views, NHWC; the target
   * branch may see its own rescaled copies): gradients, then LARS and EMA. Writes the loss of
   * every direction and micro-batch into `lossOut` (no readback here).
   */
  step(microBatches: MicroBatch[], lr: number, emaMomentum: number, lossOut: Tensor): void {
    this.accumulateGradients(microBatches, lossOut);
    this.update(lr, emaMomentum);
  }

  /**
   * Forward and backward of every micro-batch: the online gradients become the mean over the
   * micro-batches (each scaled by 1 / count). Data-parallel training all-reduces them between
   * this and {@link update}.
   */
  accumulateGradients(microBatches: MicroBatch[], lossOut: Tensor): void {
    for (const { flat } of this.onlineGroups) fill(this.gpu, flat.grads, 0);
    const gradScale = 1 / microBatches.length;
    microBatches.forEach((microBatch, micro) => {
      if (this.stacks(microBatch)) {
        this.stackedViews(microBatch, micro, gradScale, lossOut);
      } else {
        this.separateViews(microBatch, micro, gradScale, lossOut);
      }
      this.onlineCtx.releaseActivations();
      this.targetCtx.releaseActivations();
    });
  }

  /**
   * Whether a micro-batch runs its views stacked (BatchNorm keeps per-view statistics; one
   * dispatch per layer instead of two): where the adapter can bind each view's rows apart and the
   * stacked tensors fit its storage bindings.
   */
  private stacks({ view1, view2, targetView1, targetView2 }: MicroBatch): boolean {
    const fits = (view: Tensor) =>
      viewsStack(
        this.config.backbone,
        this.batch,
        view.shape[1],
        this.gpu.limits.minStorageBufferOffsetAlignment,
        this.gpu.maxBindingBytes,
      );
    const sameShape = (a: Tensor, b: Tensor) => a.shape.join() === b.shape.join();
    const targets = targetView1 && targetView2
      ? sameShape(targetView1, targetView2) && fits(targetView1)
      : !targetView1 && !targetView2;
    return this.stackViews && sameShape(view1, view2) && fits(view1) && targets;
  }

  /** One micro-batch, each view through each branch on its own. */
  private separateViews(
    { view1, view2, targetView1, targetView2 }: MicroBatch,
    micro: number,
    gradScale: number,
    lossOut: Tensor,
  ): void {
    if (this.config.loss.kind === "infonce") {
      // SimCLR: both views' online projections against each other, 2n-2 negatives.
      const h1 = this.online.forward(view1, false);
      const h2 = this.online.forward(view2, false);
      const [d1, d2] = [this.scratch(h1), this.scratch(h2)];
      this.loss.infoNce(h1, h2, d1, d2, lossOut, micro);
      this.online.backward(this.scaled(d2, gradScale), false);
      this.online.backward(this.scaled(d1, gradScale), false);
      return;
    }
    const p1 = this.online.forward(view1, true);
    const p2 = this.online.forward(view2, true);
    const z1 = this.target.forward(targetView1 ?? view1, false);
    const z2 = this.target.forward(targetView2 ?? view2, false);
    const [dp1, dp2] = [this.scratch(p1), this.scratch(p2)];
    this.loss.direction(p1, z2, dp1, lossOut, 2 * micro);
    this.loss.direction(p2, z1, dp2, lossOut, 2 * micro + 1);
    this.online.backward(this.scaled(dp2, gradScale), true);
    this.online.backward(this.scaled(dp1, gradScale), true);
  }

  /**
   * One micro-batch with the two views stacked [view1; view2] through each branch at once: the
   * same maths as {@link separateViews} (BatchNorm normalises each view with its own statistics,
   * in view order), half the dispatches.
   */
  private stackedViews(
    { view1, view2, targetView1, targetView2 }: MicroBatch,
    micro: number,
    gradScale: number,
    lossOut: Tensor,
  ): void {
    const online = this.onlineCtx;
    const target = this.targetCtx;
    online.viewGroups = 2;
    target.viewGroups = 2;
    try {
      const views = this.stack(view1, view2, online);
      if (this.config.loss.kind === "infonce") {
        const [h1, h2] = this.halves(this.online.forward(views, false));
        const [d1, d2] = [this.scratch(h1), this.scratch(h2)];
        this.loss.infoNce(h1, h2, d1, d2, lossOut, micro);
        this.online.backward(this.scaled(this.stack(d1, d2, online), gradScale), false);
        return;
      }
      const [p1, p2] = this.halves(this.online.forward(views, true));
      const targetViews = targetView1 || targetView2
        ? this.stack(targetView1 ?? view1, targetView2 ?? view2, target)
        : views;
      const [z1, z2] = this.halves(this.target.forward(targetViews, false));
      const [dp1, dp2] = [this.scratch(p1), this.scratch(p2)];
      this.loss.direction(p1, z2, dp1, lossOut, 2 * micro);
      this.loss.direction(p2, z1, dp2, lossOut, 2 * micro + 1);
      this.online.backward(this.scaled(this.stack(dp1, dp2, online), gradScale), true);
    } finally {
      online.viewGroups = 1;
      target.viewGroups = 1;
    }
  }

  /** [a; b] along the first axis, in a new activation of `ctx`. */
  private stack(a: Tensor, b: Tensor, ctx: Context): Tensor {
    if (a.shape.slice(1).join() !== b.shape.slice(1).join() || a.shape[0] !== b.shape[0]) {
      throw new Error(`SslModel: views of shapes [${a.shape}] and [${b.shape}] do not stack`);
    }
    const out = ctx.activation([2 * a.shape[0], ...a.shape.slice(1)]);
    const encoder = this.gpu.currentEncoder();
    encoder.copyBufferToBuffer(a.buffer, a.byteOffset, out.buffer, 0, a.byteLength);
    encoder.copyBufferToBuffer(b.buffer, b.byteOffset, out.buffer, a.byteLength, b.byteLength);
    return out;
  }

  /** The two stacked views' rows of `t`, each in its own online activation. */
  private halves(t: Tensor): [Tensor, Tensor] {
    const shape = [t.shape[0] / 2, ...t.shape.slice(1)];
    const [first, second] = [this.onlineCtx.activation(shape), this.onlineCtx.activation(shape)];
    const bytes = first.byteLength;
    const encoder = this.gpu.currentEncoder();
    encoder.copyBufferToBuffer(t.buffer, t.byteOffset, first.buffer, 0, bytes);
    encoder.copyBufferToBuffer(t.buffer, t.byteOffset + bytes, second.buffer, 0, bytes);
    return [first, second];
  }

  /** LARS on the online parameters with the current gradients, then the target's EMA. */
  update(lr: number, emaMomentum: number): void {
    for (const { flat, velocity, segments } of this.onlineGroups) {
      larsStepFlat(this.gpu, flat.values, flat.grads, velocity, this.norms, segments, {
        lr,
        ...this.lars,
      });
    }
    emaUpdateFlat(this.gpu, this.emaTargets, this.emaOnlines, emaMomentum);
  }

  /** Loss values written per optimizer step (directions x micro-batches). */
  lossSlots(microBatches: number): number {
    return this.config.loss.kind === "infonce" ? microBatches : 2 * microBatches;
  }

  private scratch(like: Tensor): Tensor {
    return this.onlineCtx.activation(like.shape);
  }

  private scaled(gradient: Tensor, factor: number): Tensor {
    if (factor === 1) return gradient;
    const out = this.onlineCtx.activation(gradient.shape);
    scale(this.gpu, gradient, factor, out);
    return out;
  }
}
