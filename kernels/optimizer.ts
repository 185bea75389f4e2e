/** In-place optimizer updates: LARS (METHOD.md) and SGD with momentum (linear probe). */
import { type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";
import { reduceAll } from "./reduce.ts";

const OPTIMIZER = kernelFile("optimizer", ["grad", "norms", "weight", "velocity"]);

/** LARS hyper-parameters of one update. */
export interface LarsOptions {
  lr: number;
  momentum: number;
  weightDecay: number;
  eta: number;
  /** BatchNorm weights/biases and all biases: trust ratio 1, no weight decay. */
  excluded: boolean;
}

/** SGD hyper-parameters of one update. */
export interface SgdOptions {
  lr: number;
  momentum: number;
  weightDecay: number;
}

function checkSizes(weight: Tensor, grad: Tensor, velocity: Tensor): void {
  if (grad.size !== weight.size || velocity.size !== weight.size) {
    throw new Error(
      `optimizer: weight [${weight.shape}], grad [${grad.shape}] and velocity ` +
        `[${velocity.shape}] must have the same size`,
    );
  }
}

/**
 * One LARS step on one tensor. `norms[normOffset]` and `norms[normOffset + 1]` receive |w| and
 * |g| (computed on the GPU, so nothing is read back); give each tensor its own offset so one
 * scratch buffer serves a whole model.
 */
export function larsStep(
  gpu: Gpu,
  weight: Tensor,
  grad: Tensor,
  velocity: Tensor,
  norms: Tensor,
  normOffset: number,
  options: LarsOptions,
): void {
  checkSizes(weight, grad, velocity);
  if (!options.excluded) {
    reduceAll(gpu, weight, "norm", norms, normOffset);
    reduceAll(gpu, grad, "norm", norms, normOffset + 1);
  }
  const n = weight.size;
  gpu.dispatch(gpu.kernel(OPTIMIZER, { entryPoint: "lars" }), {
    uniforms: packUniforms([
      ["u32", n],
      ["f32", options.lr],
      ["f32", options.momentum],
      ["f32", options.weightDecay],
      ["f32", options.eta],
      ["u32", options.excluded ? 1 : 0],
      ["u32", normOffset],
    ]),
    storage: { grad, norms, weight, velocity },
    workgroups: grid1d(Math.ceil(n / 1024), gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}

/** One SGD-with-momentum step on one tensor (PyTorch semantics). */
export function sgdStep(
  gpu: Gpu,
  weight: Tensor,
  grad: Tensor,
  velocity: Tensor,
  options: SgdOptions,
): void {
  checkSizes(weight, grad, velocity);
  const n = weight.size;
  gpu.dispatch(gpu.kernel(OPTIMIZER, { entryPoint: "sgd" }), {
    uniforms: packUniforms([
      ["u32", n],
      ["f32", options.lr],
      ["f32", options.momentum],
      ["f32", options.weightDecay],
      ["f32", 0],
      ["u32", 0],
      ["u32", 0],
    ]),
    storage: { grad, weight, velocity },
    workgroups: grid1d(Math.ceil(n / 1024), gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}
