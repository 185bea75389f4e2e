/** The residual join of a ResNet block: out = relu(a + b), and its backward. */
import { ceilDiv, type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const RESIDUAL = kernelFile("residual", ["a", "b", "out"]);

const ELEMENTS_PER_WORKGROUP = 256 * 4;

function run(gpu: Gpu, entryPoint: string, tensors: Record<string, Tensor>, out: Tensor): void {
  const n = out.size;
  for (const [label, t] of Object.entries(tensors)) {
    if (t.size !== n) {
      throw new Error(`${entryPoint}: ${label} has shape [${t.shape}], output has [${out.shape}]`);
    }
  }
  const [a, b] = Object.values(tensors);
  gpu.dispatch(gpu.kernel(RESIDUAL, { entryPoint }), {
    uniforms: packUniforms([["u32", n], ["u32", 0], ["u32", 0], ["u32", 0]]),
    storage: { a, b, out },
    workgroups: grid1d(
      ceilDiv(n, ELEMENTS_PER_WORKGROUP),
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
