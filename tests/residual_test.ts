import assert from "node:assert/strict";
import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import { addGradients, addMasked, addRelu, addReluBackward } from "../kernels/residual.ts";

// One f32 addition, then a selection: exact up to the addition's rounding.
const TOL = { atol: 1e-6, rtol: 1e-6 };

// 1024 and 100_000 take the vec4 kernels (n % 4 == 0), the others the scalar ones.
for (const n of [1, 7, 1024, 1025, 100_000, 100_003]) {
  Deno.test({
    name: `residual: addRelu forward and backward vs float64, n=${n} (tol ${TOL.atol}/${TOL.rtol})`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(n + 17);
      const a = rng.array(n);
      const b = rng.array(n);
      const dOut = rng.normals(n);
      const ta = gpu.upload(a, [n]);
      const tb = gpu.upload(b, [n]);
      const tdOut = gpu.upload(dOut, [n]);
      const out = gpu.empty([n]);
      const dSum = gpu.empty([n]);
      addRelu(gpu, ta, tb, out);
      addReluBackward(gpu, out, tdOut, dSum);
      const [gotOut, gotDSum] = await gpu.read([out, dSum]);
      const expected = Float64Array.from(a, (v, i) => Math.max(v + b[i], 0));
      assertClose(gotOut, expected, TOL, "relu(a + b)");
      // The mask comes from the GPU's own output so a sum rounding to zero cannot disagree.
      const expectedGrad = Float64Array.from(dOut, (g, i) => (gotOut[i] > 0 ? g : 0));
      assertClose(gotDSum, expectedGrad, { atol: 0, rtol: 0 }, "dSum");
      if (n > 100) {
        assert.ok(gotDSum.some((v) => v === 0) && gotDSum.some((v) => v !== 0), "mask is mixed");
      }
      for (const t of [ta, tb, tdOut, out, dSum]) t.release();
    },
  });
}

Deno.test({
  name: "residual: mismatched sizes throw naming the operand",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const a = gpu.zeros([2, 3]);
    const b = gpu.zeros([5]);
    const out = gpu.zeros([6]);
    assert.throws(() => addRelu(gpu, a, b, out), /b has shape \[5\]/);
    assert.throws(() => addReluBackward(gpu, a, b, out), /dOut has shape \[5\]/);
    for (const t of [a, b, out]) t.release();
  },
});

for (const n of [1, 1025, 4096, 100_000, 100_003]) {
  Deno.test({
    name: `residual: addMasked = dBranch + (out > 0 ? dOut : 0) vs float64, n=${n} ` +
      `(tol ${TOL.atol}/${TOL.rtol})`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(n + 5);
      const dBranch = rng.normals(n);
      const dOut = rng.normals(n);
      const out = Float32Array.from(rng.array(n), (v) => Math.max(v, 0));
      const tensors = [gpu.upload(dBranch, [n]), gpu.upload(dOut, [n]), gpu.upload(out, [n])];
      const dx = gpu.empty([n]);
      addMasked(gpu, tensors[0], tensors[1], tensors[2], dx);
      const got = await dx.read();
      const expected = Float64Array.from(dBranch, (g, i) => g + (out[i] > 0 ? dOut[i] : 0));
      assertClose(got, expected, TOL, "dx");
      if (n > 100) {
        assert.ok(out.some((v) => v === 0) && out.some((v) => v > 0), "mask is mixed");
      }
      assert.throws(() => addMasked(gpu, tensors[0], gpu.zeros([n + 1]), tensors[2], dx), /dOut/);
      for (const t of [...tensors, dx]) t.release();
    },
  });
}

for (const n of [3, 1025, 100_000, 100_003]) {
  Deno.test({
    name: `residual: addGradients = dBranch + dShortcut vs float64, n=${n} ` +
      `(tol ${TOL.atol}/${TOL.rtol})`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(n + 11);
      const dBranch = rng.normals(n);
      const dShortcut = rng.normals(n);
      const a = gpu.upload(dBranch, [n]);
      const b = gpu.upload(dShortcut, [n]);
      const dx = gpu.empty([n]);
      addGradients(gpu, a, b, dx);
      const expected = Float64Array.from(dBranch, (g, i) => g + dShortcut[i]);
      assertClose(await dx.read(), expected, TOL, "dx");
      assert.throws(() => addGradients(gpu, a, gpu.zeros([n + 1]), dx), /dShortcut/);
      for (const t of [a, b, dx]) t.release();
    },
  });
}
