/**
 * In-place optimizer updates: LARS (METHOD.md) on one tensor or on every tensor of a flat
 * parameter buffer in one dispatch, and SGD with momentum (linear probe).
 */
import { type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";
import { reduceAll } from "./reduce.ts";

const OPTIMIZER = kernelFile("optimizer", ["grad", "norms", "weight", "velocity"]);
const OPTIMIZER_FLAT = kernelFile("optimizer_flat", [
  "table",
  "grad",
  "norms",
  "weight",
  "velocity",
]);

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

/** One tensor inside flat parameter buffers: its element offset and length, and its LARS rule. */
export interface TensorSegment {
  offset: number;
  size: number;
  /** BatchNorm weights/biases and all biases: trust ratio 1, no weight decay. */
  excluded: boolean;
}

/** The LARS hyper-parameters shared by every tensor of a flat update. */
export type LarsHyperParameters = Omit<LarsOptions, "excluded">;

/**
 * The segment table of {@link larsStepFlat}: uploaded once per model (per flat buffer group),
 * checked against the length of the flat buffers it indexes. Segment i's norms go to
 * `norms[2 (firstNorm + i)]` and the next element, so several groups share one norms tensor.
 */
export class LarsSegments {
  /** u32 [count, 3]: offset, length, excluded (1 or 0). */
  readonly table: Tensor;
  readonly count: number;

  constructor(
    gpu: Gpu,
    readonly segments: readonly TensorSegment[],
    readonly length: number,
    readonly firstNorm = 0,
  ) {
    if (!Number.isInteger(firstNorm) || firstNorm < 0) {
      throw new Error(`LarsSegments: firstNorm ${firstNorm} is not a non-negative integer`);
    }
    if (segments.length === 0) throw new Error("LarsSegments: no tensors");
    segments.forEach(({ offset, size }, i) => {
      if (!Number.isInteger(offset) || !Number.isInteger(size) || offset < 0 || size < 1) {
        throw new Error(`LarsSegments: tensor ${i} has offset ${offset} and size ${size}`);
      }
      if (offset + size > length) {
        throw new Error(
          `LarsSegments: tensor ${i} (offset ${offset}, size ${size}) ends past the flat ` +
            `buffers' ${length} elements`,
        );
      }
      const previous = segments[i - 1];
      if (previous && offset < previous.offset + previous.size) {
        throw new Error(`LarsSegments: tensor ${i} overlaps tensor ${i - 1}: list them in order`);
      }
    });
    this.count = segments.length;
    this.table = gpu.upload(
      segments.flatMap((s) => [s.offset, s.size, s.excluded ? 1 : 0]),
      [segments.length, 3],
      "u32",
    );
  }
}

/**
 * One LARS step on every tensor of flat weight, gradient and velocity buffers (the same layout
 * in all three), in one dispatch: each tensor's |w| and |g| by a fixed-order tree, then its
 * update. `norms[2j]` and `norms[2j + 1]` receive |w| and |g| of segment i (excluded ones too),
 * j = firstNorm + i.
 */
export function larsStepFlat(
  gpu: Gpu,
  weight: Tensor,
  grad: Tensor,
  velocity: Tensor,
  norms: Tensor,
  segments: LarsSegments,
  options: LarsHyperParameters,
): void {
  checkSizes(weight, grad, velocity);
  if (weight.size !== segments.length) {
    throw new Error(
      `larsStepFlat: the flat buffers hold ${weight.size} elements but the segment table was ` +
        `made for ${segments.length}`,
    );
  }
  const normsNeeded = 2 * (segments.firstNorm + segments.count);
  if (norms.size < normsNeeded) {
    throw new Error(
      `larsStepFlat: norms has ${norms.size} elements, needs 2 per tensor (${normsNeeded})`,
    );
  }
  gpu.dispatch(gpu.kernel(OPTIMIZER_FLAT, { entryPoint: "lars" }), {
    uniforms: packUniforms([
      ["u32", segments.count],
      ["f32", options.lr],
      ["f32", options.momentum],
      ["f32", options.weightDecay],
      ["f32", options.eta],
      ["u32", segments.firstNorm],
    ]),
    storage: { table: segments.table, grad, norms, weight, velocity },
    workgroups: grid1d(segments.count, gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}
