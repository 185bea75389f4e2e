/**
 * The residual join of a ResNet block: out = relu(a + b), its backward, and the gradient joins,
 * masked or plain (residual.wgsl; residual_vec4.wgsl when the element count is a multiple of 4).
 */
import { ceilDiv, type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const RESIDUAL = kernelFile("residual", ["a", "b", "out", "mask"]);
const RESIDUAL_VEC4 = kernelFile("residual_vec4", ["a", "b", "out", "mask"]);

const ELEMENTS_PER_WORKGROUP = 256 * 4;

function run(gpu: Gpu, entryPoint: string, tensors: Record<string, Tensor>, out: Tensor): void {
  const n = out.size;
  for (const [label, t] of Object.entries(tensors)) {
    if (t.size !== n) {
      throw new Error(`${entryPoint}: ${label} has shape [${t.shape}], output has [${out.shape}]`);
    }
  }
  const [a, b, mask] = Object.values(tensors);
  // vec4 loads (a quarter of them) when every operand is whole, 16-byte aligned quads.
  const vec4 = n % 4 === 0 &&
    [...Object.values(tensors), out].every((t) => t.byteOffset % 16 === 0);
  const elements = vec4 ? n / 4 : n;
  gpu.dispatch(gpu.kernel(vec4 ? RESIDUAL_VEC4 : RESIDUAL, { entryPoint }), {
    uniforms: packUniforms([["u32", elements], ["u32", 0], ["u32", 0], ["u32", 0]]),
    storage: { a, b, out, mask },
    workgroups: grid1d(
      ceilDiv(elements, ELEMENTS_PER_WORKGROUP),
      gpu.limits.maxComputeWorkgroupsPerDimension,
    ),
  });
}

/** out = relu(a + b): the residual branch plus the shortcut, then the block's final ReLU. */
export function addRelu(gpu: Gpu, a: Tensor, b: Tensor, out: Tensor): void {
  run(gpu, "add_relu", { a, b }, out);
}

/** dSum = dOut where the forward output was positive, else 0; both branches receive dSum. */
export function addReluBackward(gpu: Gpu, out: Tensor, dOut: Tensor, dSum: Tensor): void {
  run(gpu, "add_relu_backward", { out, dOut }, dSum);
}

/**
 * dx = dBranch + (out > 0 ? dOut : 0): a block's input gradient when its shortcut is the identity
 * and its last BatchNorm fused the residual add and ReLU (that BatchNorm masks dOut itself, so
 * the shortcut's masked gradient is only ever needed here).
 */
export function addMasked(gpu: Gpu, dBranch: Tensor, dOut: Tensor, out: Tensor, dx: Tensor): void {
  run(gpu, "add_masked", { dBranch, dOut, out }, dx);
}

/**
 * dx = dBranch + dShortcut: a block's input gradient when the shortcut is a downsample, whose
 * backward already saw the masked dOut.
 */
export function addGradients(gpu: Gpu, dBranch: Tensor, dShortcut: Tensor, dx: Tensor): void {
  run(gpu, "add", { dBranch, dShortcut }, dx);
}
