import assert from "node:assert/strict";
import { gpuTest, testGpu } from "./util.ts";
import { ceilDiv, grid1d, specialise } from "../runtime/gpu.ts";
import { add } from "../kernels/elementwise.ts";

Deno.test({
  name: "runtime: tensors upload, read back in one batch, and reuse pooled buffers",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const a = gpu.upload([1, 2, 3], [3]);
    const b = gpu.upload([7, 8], [2], "u32");
    const z = gpu.zeros([5]);
    const [ga, gb, gz] = await gpu.read([a, b, z]);
    assert.deepEqual([...ga], [1, 2, 3]);
    assert.ok(gb instanceof Uint32Array);
    assert.deepEqual([...gb], [7, 8]);
    assert.deepEqual([...gz], [0, 0, 0, 0, 0]);
    const buffer = a.buffer;
    a.release();
    const again = gpu.empty([3]);
    assert.equal(again.buffer, buffer, "a released buffer of the same size is reused");
    again.release();
    b.release();
    z.release();
  },
});

Deno.test({
  name: "runtime: an invalid dispatch throws with the kernel's name",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const a = gpu.upload([1, 2, 3, 4], [4]);
    const out = gpu.empty([4]);
    // Binding the same buffer as read-only input and writable output is a validation error.
    add(gpu, a, a, a);
    await assert.rejects(() => gpu.read([out]), /elementwise:add/);
    a.release();
    out.release();
  },
});

Deno.test({
  name: "runtime: tensors over the adapter's binding limit are refused with the fix",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const elements = Math.floor(gpu.limits.maxStorageBufferBindingSize / 4) + 1;
    assert.throws(() => gpu.empty([elements]), /lower the batch size/);
  },
});

Deno.test("runtime: grid folding, ceilDiv and WGSL substitution", () => {
  assert.deepEqual(grid1d(10), [10, 1]);
  const [x, y] = grid1d(200_000);
  assert.ok(x <= 65535 && x * y >= 200_000);
  assert.equal(ceilDiv(7, 2), 4);
  assert.equal(specialise("a {{N}} b", { N: 4 }), "a 4 b");
  assert.throws(() => specialise("{{M}}", {}), /placeholder \{\{M\}\}/);
});
