/** Softmax cross-entropy loss and its gradient (linear probe training). */
import { type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const SOFTMAX_XENT = kernelFile("softmax_xent", ["logits", "labels", "loss", "dlogits"]);

/**
 * Per-row loss[r] = -log softmax(logits[r])[label[r]]; dlogits = (softmax - onehot) * gradScale.
 * Use gradScale = 1 / rows for the gradient of the mean loss.
 */
export function softmaxCrossEntropy(
  gpu: Gpu,
  logits: Tensor,
  labels: Tensor,
  loss: Tensor,
  dlogits: Tensor,
  gradScale: number,
): void {
  const [rows, classes] = logits.shape;
  if (logits.shape.length !== 2) throw new Error(`softmaxCrossEntropy: logits must be 2-D`);
  if (labels.dtype !== "u32" || labels.size !== rows) {
    throw new Error(`softmaxCrossEntropy: need ${rows} u32 labels, got [${labels.shape}]`);
  }
  if (loss.size !== rows || dlogits.size !== logits.size) {
    throw new Error(
      `softmaxCrossEntropy: loss [${loss.shape}] / dlogits [${dlogits.shape}] mismatch`,
    );
  }
  gpu.dispatch(gpu.kernel(SOFTMAX_XENT), {
    uniforms: packUniforms([["u32", rows], ["u32", classes], ["f32", gradScale]]),
    storage: { logits, labels, loss, dlogits },
    workgroups: grid1d(rows, gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}
