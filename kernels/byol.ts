/** BYOL's loss (2 - 2 cos) on unit vectors, forward and backward. */
import { ceilDiv, type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const BYOL = kernelFile("byol", ["pHat", "zHat", "rowLoss", "dpHat"]);

function checkPair(pHat: Tensor, zHat: Tensor): [number, number] {
  if (pHat.shape.length !== 2 || pHat.shape.join() !== zHat.shape.join()) {
    throw new Error(`byol: pHat [${pHat.shape}] and zHat [${zHat.shape}] must both be [n, d]`);
  }
  return [pHat.shape[0], pHat.shape[1]];
}

function uniforms(n: number, dim: number): ArrayBuffer {
  return packUniforms([["u32", n], ["u32", dim], ["f32", 1 / n], ["u32", 0]]);
}

/** rowLoss[i] = (2 - 2 p_hat_i . z_hat_i) / n (sum them for the loss). */
export function byolForward(gpu: Gpu, pHat: Tensor, zHat: Tensor, rowLoss: Tensor): void {
  const [n, dim] = checkPair(pHat, zHat);
  if (rowLoss.size !== n) {
    throw new Error(`byol: rowLoss must hold ${n} values, got [${rowLoss.shape}]`);
  }
  gpu.dispatch(gpu.kernel(BYOL, { entryPoint: "forward" }), {
    uniforms: uniforms(n, dim),
    storage: { pHat, zHat, rowLoss },
    workgroups: grid1d(n, gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}

/** dp_hat = -(2 / n) z_hat (overwritten): the gradient of the mean BYOL loss. */
export function byolBackward(gpu: Gpu, zHat: Tensor, dpHat: Tensor): void {
  const [n, dim] = checkPair(dpHat, zHat);
  gpu.dispatch(gpu.kernel(BYOL, { entryPoint: "backward" }), {
    uniforms: uniforms(n, dim),
    storage: { zHat, dpHat },
    workgroups: grid1d(ceilDiv(n * dim, 256), gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}
