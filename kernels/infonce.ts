/** InfoNCE / NT-Xent (SimCLR form) on the [2n, 2n] similarity of both views' unit embeddings. */
import { ceilDiv, type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const INFONCE = kernelFile("infonce", ["similarity", "rowLoss", "logSumExp", "grad"]);

function checkSimilarity(similarity: Tensor): number {
  const [rows, cols] = similarity.shape;
  if (similarity.shape.length !== 2 || rows !== cols || rows % 2 !== 0 || rows < 2) {
    throw new Error(`infonce: similarity must be [2n, 2n] with n >= 1, got [${similarity.shape}]`);
  }
  return rows;
}

function checkTemperature(temperature: number): void {
  if (!(temperature > 0)) throw new Error(`infonce: temperature must be > 0, got ${temperature}`);
}

function uniforms(width: number, temperature: number): ArrayBuffer {
  return packUniforms([["u32", width / 2], ["f32", 1 / temperature], ["u32", 0], ["u32", 0]]);
}

/** rowLoss[r] = loss_r / 2n (sum them for the loss) and each row's logsumexp (for the gradient). */
export function infoNceForward(
  gpu: Gpu,
  similarity: Tensor,
  rowLoss: Tensor,
  logSumExp: Tensor,
  temperature: number,
): void {
  const width = checkSimilarity(similarity);
  checkTemperature(temperature);
  for (const [name, t] of [["rowLoss", rowLoss], ["logSumExp", logSumExp]] as const) {
    if (t.size !== width) {
      throw new Error(`infonce: ${name} must hold ${width} values, got [${t.shape}]`);
    }
  }
  gpu.dispatch(gpu.kernel(INFONCE, { entryPoint: "rows" }), {
    uniforms: uniforms(width, temperature),
    storage: { similarity, rowLoss, logSumExp },
    workgroups: grid1d(width, gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}

/** grad = dL/dS symmetrised ([2n, 2n], overwritten), so that dL/dE = grad E. */
export function infoNceBackward(
  gpu: Gpu,
  similarity: Tensor,
  logSumExp: Tensor,
  grad: Tensor,
  temperature: number,
): void {
  const width = checkSimilarity(similarity);
  checkTemperature(temperature);
  if (grad.shape.join() !== similarity.shape.join()) {
    throw new Error(`infonce: grad [${grad.shape}] must match similarity [${similarity.shape}]`);
  }
  if (logSumExp.size !== width) {
    throw new Error(`infonce: logSumExp must hold ${width} values, got [${logSumExp.shape}]`);
  }
  gpu.dispatch(gpu.kernel(INFONCE, { entryPoint: "grad_symmetric" }), {
    uniforms: uniforms(width, temperature),
    storage: { similarity, logSumExp, grad },
    workgroups: grid1d(ceilDiv(width * width, 256), gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}
