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
  type Module,
  type Parameter,
  type StateTensor,
} from "./layers.ts";

/** Sizes of one MLP head. */
export interface MlpConfig {
  inFeatures: number;
  hidden: number;
  outFeatures: number;
}

/** Linear -> BatchNorm1d (+ReLU, fused) -> Linear. */
export class Mlp implements Module {
  private fc1: Linear;
  readonly bn: BatchNorm;
  private fc2: Linear;

  constructor(ctx: Context, name: string, readonly config: MlpConfig, rng: Rng) {
    this.fc1 = new Linear(ctx, `${name}.0`, config.inFeatures, config.hidden, rng);
    this.bn = new BatchNorm(ctx, `${name}.1`, config.hidden, true);
    this.fc2 = new Linear(ctx, `${name}.3`, config.hidden, config.outFeatures, rng);
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
