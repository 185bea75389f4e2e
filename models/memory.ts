/**
 * Activation memory of a training step, estimated from the architecture before anything is
 * allocated, so a batch that cannot fit stops early with the largest batch that does.
 */
import { ARCHITECTURES, type ResNetConfig } from "./resnet.ts";

/** Per-sample sizes (in floats) of the activations one forward pass creates. */
export interface ActivationProfile {
  /** Sum over every tensor a training forward keeps (per sample). */
  totalFloats: number;
  /** The largest single tensor (per sample) and where it is. */
  largestFloats: number;
  largestAt: string;
}

function convOut(size: number, kernel: number, stride: number, padding: number): number {
  return Math.floor((size + 2 * padding - kernel) / stride) + 1;
}

/** Walk the backbone's shapes for one sample at `resolution` x `resolution`. */
export function activationProfile(config: ResNetConfig, resolution: number): ActivationProfile {
  let total = 0;
  let largest = 0;
  let largestAt = "";
  const record = (floats: number, where: string, copies = 1) => {
    total += floats * copies;
    if (floats > largest) {
      largest = floats;
      largestAt = where;
    }
  };
  record(resolution * resolution * config.inChannels, "input");
  let size = config.smallImage ? resolution : convOut(resolution, 7, 2, 3);
  let channels = config.widths[0];
  // conv1 output and bn1 output
  record(size * size * channels, "conv1", 2);
  if (!config.smallImage) {
    size = convOut(size, 3, 2, 1);
    record(size * size * channels, "maxpool", 2); // values + argmax
  }
  const spec = ARCHITECTURES[config.arch];
  const expansion = spec.block === "basic" ? 1 : 4;
  spec.blocks.forEach((count, stage) => {
    const planes = config.widths[stage];
    for (let i = 0; i < count; i++) {
      const stride = i === 0 && stage > 0 ? 2 : 1;
      const outSize = convOut(size, 3, stride, 1);
      const where = `layer${stage + 1}.${i}`;
      if (spec.block === "basic") {
        record(outSize * outSize * planes, `${where}.conv1`, 4); // conv1, bn1, conv2, bn2
      } else {
        record(size * size * planes, `${where}.conv1`, 2);
        record(outSize * outSize * planes, `${where}.conv2`, 2);
        record(outSize * outSize * planes * expansion, `${where}.conv3`, 2);
      }
      const outChannels = planes * expansion;
      if (stride !== 1 || channels !== outChannels) {
        record(outSize * outSize * outChannels, `${where}.downsample`, 2);
      }
      record(outSize * outSize * outChannels, `${where}.out`);
      size = outSize;
      channels = outChannels;
    }
  });
  record(channels, "avgpool");
  return { totalFloats: total, largestFloats: largest, largestAt };
}

/** The estimate of one optimizer step's activation memory and the per-binding check. */
export interface MemoryEstimate {
  /** Bytes of activations and activation gradients alive at the peak of a micro-batch. */
  stepBytes: number;
  largestTensorBytes: number;
  largestAt: string;
  /** Largest micro-batch whose biggest tensor fits one storage binding. */
  maxBatch: number;
}

/**
 * Estimate for two views: the online forward keeps both views' activations and the backward
 * adds as much again in gradients; the target forward of both views adds one more copy.
 */
export function estimateStepMemory(
  config: ResNetConfig,
  batch: number,
  resolution: number,
  maxBindingBytes: number,
): MemoryEstimate {
  const profile = activationProfile(config, resolution);
  const copies = 2 /* views */ * 2 /* forward + gradient */ + 2 /* target forward */;
  return {
    stepBytes: profile.totalFloats * 4 * batch * copies,
    largestTensorBytes: profile.largestFloats * 4 * batch,
    largestAt: profile.largestAt,
    maxBatch: Math.floor(maxBindingBytes / (profile.largestFloats * 4)),
  };
}

/**
 * Whether a step can run its two views stacked as one batch of 2 x `batch`: each view's rows must
 * start at an offset the adapter can bind (`alignment`), and the stacked step's largest tensor
 * must still fit one storage binding (the check above is per view).
 */
export function viewsStack(
  config: ResNetConfig,
  batch: number,
  resolution: number,
  alignment: number,
  maxBindingBytes: number,
): boolean {
  const largest = activationProfile(config, resolution).largestFloats * 4 * 2 * batch;
  return (batch * 4) % alignment === 0 && largest <= maxBindingBytes;
}

/** Throw a clear error when a batch cannot fit the adapter's per-binding limit. */
export function checkBatchFits(
  config: ResNetConfig,
  batch: number,
  accum: number,
  resolution: number,
  maxBindingBytes: number,
): MemoryEstimate {
  const estimate = estimateStepMemory(config, batch, resolution, maxBindingBytes);
  if (estimate.largestTensorBytes > maxBindingBytes) {
    const fit = Math.max(1, estimate.maxBatch);
    const accumulation = Math.ceil(batch * accum / fit);
    throw new Error(
      `batch ${batch} at ${resolution}px needs a ${mib(estimate.largestTensorBytes)} MiB ` +
        `activation (${estimate.largestAt}), over this adapter's ${mib(maxBindingBytes)} MiB per ` +
        `storage binding. The largest batch that fits is ${estimate.maxBatch}: use --batch ${fit} ` +
        `--accum ${accumulation} for an effective batch of ${fit * accumulation} ` +
        "(negatives then come from each micro-batch)",
    );
  }
  return estimate;
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(0);
}
