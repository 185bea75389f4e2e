import assert from "node:assert/strict";
import { gpuTest, testGpu } from "./util.ts";
import { ceilDiv, createGpu, grid1d, kernelFile, specialise } from "../runtime/gpu.ts";
import { add, fill, scale } from "../kernels/elementwise.ts";

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
  name: "runtime: dispatches sharing one compute pass see each other's writes, in order with " +
    "copies and clears between them",
  ...gpuTest,
  fn: async () => {
    // Without validation (the tests' shared GPU validates: a submit per dispatch), consecutive
    // dispatches share one open pass, and a clear in between must end it first.
    const gpu = await createGpu({ validate: false });
    const a = gpu.empty([4]);
    const b = gpu.empty([4]);
    const c = gpu.empty([4]);
    const d = gpu.empty([4]);
    fill(gpu, a, 2);
    scale(gpu, a, 3, b); // b = 6, reading a's fill from the same pass
    gpu.currentEncoder().clearBuffer(a.buffer); // a = 0, after the scale and before the add
    add(gpu, a, b, c); // c = 6
    scale(gpu, c, 2, d); // d = 12
    const [ra, rb, rc, rd] = await gpu.read([a, b, c, d]);
    assert.deepEqual([...ra, ...rb, ...rc, ...rd], [
      0,
      0,
      0,
      0,
      6,
      6,
      6,
      6,
      6,
      6,
      6,
      6,
      12,
      12,
      12,
      12,
    ]);
    gpu.destroy();
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

Deno.test("runtime: a kernel file names each binding once", () => {
  assert.throws(() => kernelFile("elementwise", ["a", "b", "a"]), /binding "a" named twice/);
});

Deno.test({
  name: "runtime: a dispatch binding an unknown name throws, listing the kernel's bindings",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const kernel = gpu.kernel(kernelFile("elementwise", ["a", "b", "out"]), { entryPoint: "fill" });
    const out = gpu.empty([4]);
    const storage = { out, bogus: out } as unknown as { out: typeof out };
    assert.throws(
      () => gpu.dispatch(kernel, { storage, workgroups: [1] }),
      /elementwise:fill: no binding named "bogus" \(bindings: a, b, out\)/,
    );
    out.release();
  },
});

Deno.test({
  name: "runtime: dispatch observers see each dispatch until they unsubscribe",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const t = gpu.empty([8]);
    const doubled = gpu.empty([8]);
    const seen: string[] = [];
    const unsubscribe = gpu.observeDispatches(({ kernel }) => seen.push(kernel.name));
    const before = gpu.dispatchObserverCount;
    fill(gpu, t, 1);
    scale(gpu, t, 2, doubled);
    unsubscribe();
    fill(gpu, t, 3);
    assert.deepEqual(seen, ["elementwise:fill", "elementwise:scale"]);
    assert.equal(gpu.dispatchObserverCount, before - 1);
    const [last, scaled] = await gpu.read([t, doubled]);
    assert.deepEqual([...last], Array(8).fill(3));
    assert.deepEqual([...scaled], Array(8).fill(2));
    t.release();
    doubled.release();
  },
});
