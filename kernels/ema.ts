/** The target network's exponential moving average update and its momentum schedule. */
import { ceilDiv, type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const EMA = kernelFile("ema", ["online", "target"]);

/**
 * METHOD.md's momentum at step k of K: m = 1 - (1 - base) (cos(pi k / K) + 1) / 2, rising from
 * `base` at k = 0 to 1 at k = K.
 */
export function momentumAt(step: number, totalSteps: number, base = 0.99): number {
  if (!(totalSteps > 0)) throw new Error(`momentumAt: totalSteps must be > 0, got ${totalSteps}`);
  if (!(step >= 0 && step <= totalSteps)) {
    throw new Error(`momentumAt: step ${step} outside 0..${totalSteps}`);
  }
  if (!(base >= 0 && base <= 1)) throw new Error(`momentumAt: base ${base} outside [0, 1]`);
  return 1 - (1 - base) * (Math.cos(Math.PI * step / totalSteps) + 1) / 2;
}

/**
 * target <- m * target + (1 - m) * online for each pair of tensors (parameters and BatchNorm
 * running statistics alike), one dispatch per tensor.
 */
export function emaUpdate(gpu: Gpu, targets: Tensor[], onlines: Tensor[], momentum: number): void {
  if (targets.length !== onlines.length) {
    throw new Error(
      `emaUpdate: ${targets.length} target tensors but ${onlines.length} online ones`,
    );
  }
  if (!(momentum >= 0 && momentum <= 1)) {
    throw new Error(`emaUpdate: momentum ${momentum} outside [0, 1]`);
  }
  const kernel = gpu.kernel(EMA);
  targets.forEach((target, i) => {
    const online = onlines[i];
    if (target.size !== online.size || target.dtype !== "f32" || online.dtype !== "f32") {
      throw new Error(
        `emaUpdate: tensor ${i}: target ${target.dtype} [${target.shape}] and online ` +
          `${online.dtype} [${online.shape}] must be f32 of the same size`,
      );
    }
    if (target.buffer === online.buffer) {
      throw new Error(`emaUpdate: tensor ${i}: target and online share a buffer`);
    }
    gpu.dispatch(kernel, {
      // 1 - m in float64, then rounded once to f32 (see ema.wgsl).
      uniforms: packUniforms([["u32", target.size], ["f32", 1 - momentum], ["u32", 0], ["u32", 0]]),
      storage: { online, target },
      workgroups: grid1d(ceilDiv(target.size, 1024), gpu.limits.maxComputeWorkgroupsPerDimension),
    });
  });
}
