/**
 * The projector and predictor MLPs of METHOD.md: Linear(in -> hidden, bias) -> BatchNorm1d ->
 * ReLU -> Linear(hidden -> out, bias). Parameter names follow torch's Sequential indices
 * (`<name>.0`, `<name>.1`, `<name>.3`), as in the released code's necks.
 */
import type { Tensor } from "../runtime/gpu.ts";
import type { Rng } from "../runtime/random.ts";
import {
  BatchNorm,
  type Context,
  Linear,
  type LinearInit,
  type Module,
  type Parameter,
  type StateTensor,
} from "./layers.ts";

/**
 * How a head's two Linear layers start (BatchNorm always starts at weight 1, bias 0):
 * - `torch-default`: torch's default Linear init, uniform +-1/sqrt(fan_in) for weights and biases;
 * - `kaiming-fan-in`: weights Normal(0, sqrt(2 / fan_in)) (Kaiming normal, fan-in, ReLU gain),
 *   biases 0: the released code's projector (mmcv kaiming_init);
 * - `normal-0.01`: weights Normal(0, 0.01), biases 0: the released code's predictor.
 */
export type HeadInit = "torch-default" | "kaiming-fan-in" | "normal-0.01";

/** Sizes of one MLP head, and its init (default torch-default). */
export interface MlpConfig {
  inFeatures: number;
  hidden: number;
  outFeatures: number;
  init?: HeadInit;
}

/** The Linear init of a layer with `fanIn` inputs under a head init. */
export function linearInit(init: HeadInit, fanIn: number): LinearInit {
  switch (init) {
    case "torch-default":
      return { kind: "torch-default" };
    case "kaiming-fan-in":
      return { kind: "normal", std: Math.sqrt(2 / fanIn) };
    case "normal-0.01":
      return { kind: "normal", std: 0.01 };
    default:
      throw new Error(`unknown head init "${init}" (torch-default, kaiming-fan-in, normal-0.01)`);
  }
}

/** Linear -> BatchNorm1d (+ReLU, fused) -> Linear. */
export class Mlp implements Module {
  private fc1: Linear;
  readonly bn: BatchNorm;
  private fc2: Linear;

  constructor(ctx: Context, name: string, readonly config: MlpConfig, rng: Rng) {
    const init = config.init ?? "torch-default";
    const { inFeatures, hidden, outFeatures } = config;
    this.fc1 = new Linear(
      ctx,
      `${name}.0`,
      inFeatures,
      hidden,
      rng,
      true,
      linearInit(init, inFeatures),
    );
    this.bn = new BatchNorm(ctx, `${name}.1`, hidden, true);
    this.fc2 = new Linear(
      ctx,
      `${name}.3`,
      hidden,
      outFeatures,
      rng,
      true,
      linearInit(init, hidden),
    );
  }

  forward(x: Tensor): Tensor {
    return this.fc2.forward(this.bn.forward(this.fc1.forward(x)));
  }

  backward(dy: Tensor): Tensor {
    return this.fc1.backward(this.bn.backward(this.fc2.backward(dy)!))!;
  }

  parameters(): Parameter[] {
    return [
      ...this.fc1.parameters(),
      ...this.bn.parameters(),
      ...this.fc2.parameters(),
    ];
  }
  states(): StateTensor[] {
    return this.bn.states();
  }
}
