import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import { softmaxCrossEntropy } from "../kernels/softmax_xent.ts";

// One exp/log per element in f32.
const TOL = { atol: 1e-6, rtol: 1e-5 };

for (const [rows, classes] of [[1, 1], [1, 10], [7, 3], [256, 10], [3, 1000]]) {
  Deno.test({
    name: `softmax cross-entropy: loss and gradient, ${rows} rows x ${classes} classes`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(rows * 1000 + classes);
      const logits = rng.array(rows * classes, -5, 5);
      const labels = Uint32Array.from({ length: rows }, () => Math.floor(rng.next() * classes));
      const tLogits = gpu.upload(logits, [rows, classes]);
      const tLabels = gpu.upload(labels, [rows], "u32");
      const loss = gpu.empty([rows]);
      const dlogits = gpu.empty([rows, classes]);
      softmaxCrossEntropy(gpu, tLogits, tLabels, loss, dlogits, 1 / rows);
      const [gotLoss, gotGrad] = await gpu.read([loss, dlogits]);
      const refLoss = new Float64Array(rows);
      const refGrad = new Float64Array(rows * classes);
      for (let r = 0; r < rows; r++) {
        const row = Array.from(logits.subarray(r * classes, (r + 1) * classes));
        const m = Math.max(...row);
        const z = row.reduce((s, v) => s + Math.exp(v - m), 0);
        refLoss[r] = Math.log(z) + m - row[labels[r]];
        row.forEach((v, c) => {
          refGrad[r * classes + c] = (Math.exp(v - m) / z - (c === labels[r] ? 1 : 0)) / rows;
        });
      }
      assertClose(gotLoss, refLoss, TOL, "loss");
      assertClose(gotGrad, refGrad, TOL, "dlogits");
      for (const t of [tLogits, tLabels, loss, dlogits]) t.release();
    },
  });
}
