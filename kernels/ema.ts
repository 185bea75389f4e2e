/** The target network's exponential moving average update (its momentum: models/schedule.ts). */
import { ceilDiv, type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const EMA = kernelFile("ema", ["online", "target", "onlineSecond", "targetSecond"]);

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
    checkPair("emaUpdate", i, target, online);
    gpu.dispatch(kernel, {
      // 1 - m in float64, then rounded once to f32 (see ema.wgsl).
      uniforms: packUniforms([["u32", target.size], ["f32", 1 - momentum], ["u32", 0], ["u32", 0]]),
      storage: { online, target },
      workgroups: grid1d(ceilDiv(target.size, 1024), gpu.limits.maxComputeWorkgroupsPerDimension),
    });
  });
}

function checkPair(caller: string, i: number, target: Tensor, online: Tensor): void {
  if (target.size !== online.size || target.dtype !== "f32" || online.dtype !== "f32") {
    throw new Error(
      `${caller}: tensor ${i}: target ${target.dtype} [${target.shape}] and online ` +
        `${online.dtype} [${online.shape}] must be f32 of the same size`,
    );
  }
  if (target.buffer === online.buffer) {
    throw new Error(`${caller}: tensor ${i}: target and online share a buffer`);
  }
}

/**
 * The same update for pairs of flat tensors (a model's flat parameter buffers and its flat
 * BatchNorm statistics), two pairs per dispatch. Every target must lie in its own buffer, apart
 * from every online tensor.
 */
export function emaUpdateFlat(
  gpu: Gpu,
  targets: Tensor[],
  onlines: Tensor[],
  momentum: number,
): void {
  if (targets.length !== onlines.length || targets.length === 0) {
    throw new Error(
      `emaUpdateFlat: ${targets.length} target tensors but ${onlines.length} online ones ` +
        "(one per target, at least one)",
    );
  }
  if (!(momentum >= 0 && momentum <= 1)) {
    throw new Error(`emaUpdateFlat: momentum ${momentum} outside [0, 1]`);
  }
  targets.forEach((target, i) => checkPair("emaUpdateFlat", i, target, onlines[i]));
  const onlineBuffers = new Set(onlines.map((t) => t.buffer));
  targets.forEach((target, i) => {
    if (
      onlineBuffers.has(target.buffer) || targets.findIndex((t) => t.buffer === target.buffer) !== i
    ) {
      throw new Error(
        `emaUpdateFlat: target ${i} shares a buffer with another target or an online tensor`,
      );
    }
  });
  for (let i = 0; i < targets.length; i += 2) {
    const [target, online] = [targets[i], onlines[i]];
    const [second, onlineSecond] = [targets[i + 1], onlines[i + 1]];
    const total = target.size + (second?.size ?? 0);
    gpu.dispatch(gpu.kernel(EMA, { entryPoint: second ? "pair" : "main" }), {
      uniforms: packUniforms([
        ["u32", target.size],
        ["f32", 1 - momentum],
        ["u32", second?.size ?? 0],
        ["u32", 0],
      ]),
      storage: second ? { online, target, onlineSecond, targetSecond: second } : { online, target },
      workgroups: grid1d(ceilDiv(total, 1024), gpu.limits.maxComputeWorkgroupsPerDimension),
    });
  }
}
