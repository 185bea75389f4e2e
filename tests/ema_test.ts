import assert from "node:assert/strict";
import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import { emaUpdate, emaUpdateFlat } from "../kernels/ema.ts";
import { momentumAt } from "../models/schedule.ts";

Deno.test("ema: momentumAt follows 1 - (1 - base)(cos(pi k/K) + 1)/2", () => {
  assert.equal(momentumAt(0, 100), 0.99);
  assert.equal(momentumAt(100, 100), 1);
  // Half-way: cos(pi/2) = 0, so m = 1 - 0.01/2.
  assertClose([momentumAt(50, 100)], [0.995], { atol: 1e-15, rtol: 0 }, "half-way");
  assertClose([momentumAt(25, 100, 0.996)], [1 - 0.004 * (Math.SQRT1_2 + 1) / 2], {
    atol: 1e-15,
    rtol: 0,
  }, "quarter, base 0.996");
  for (let k = 1; k <= 100; k++) assert.ok(momentumAt(k, 100) >= momentumAt(k - 1, 100), "rises");
  assert.throws(() => momentumAt(101, 100), /outside 0..100/);
  assert.throws(() => momentumAt(0, 0), /totalSteps must be > 0/);
});

Deno.test({
  name: "ema: target <- m target + (1 - m) online over a parameter list (sizes 1, 1000, 70001)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rng = new Rng(3);
    const sizes = [1, 1000, 70_001];
    const online = sizes.map((n) => rng.normals(n));
    const target = sizes.map((n) => rng.normals(n));
    const onlineT = online.map((a, i) => gpu.upload(a, [sizes[i]]));
    const targetT = target.map((a, i) => gpu.upload(a, [sizes[i]]));
    const m = momentumAt(300, 1000, 0.99);
    emaUpdate(gpu, targetT, onlineT, m);
    const got = await gpu.read(targetT);
    // One f32 multiply-add around values of size ~1.
    sizes.forEach((n, i) => {
      const expected = Float64Array.from(
        { length: n },
        (_, j) => m * target[i][j] + (1 - m) * online[i][j],
      );
      assertClose(got[i], expected, { atol: 1e-6, rtol: 1e-6 }, `tensor ${i}`);
    });
    for (const t of [...onlineT, ...targetT]) t.release();
  },
});

Deno.test({
  name:
    "ema: m = 1 - 1e-6 still moves the target by (1 - m)(online - target); equal tensors stay exact",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const online = gpu.upload([1, 5, -3], [3]);
    const target = gpu.upload([0, 5, -3], [3]);
    emaUpdate(gpu, [target], [online], 1 - 1e-6);
    const got = await target.read();
    // 1 - m in f32 from an f32 m would be 1.0133e-6 (1.3% off); from float64 it is ~1e-6.
    assertClose([got[0]], [1e-6], { atol: 0, rtol: 1e-6 }, "moved element");
    assert.equal(got[1], 5);
    assert.equal(got[2], -3);
    assert.throws(() => emaUpdate(gpu, [target], [], 0.99), /1 target tensors but 0 online/);
    assert.throws(() => emaUpdate(gpu, [target], [target], 0.99), /share a buffer/);
    online.release();
    target.release();
  },
});

for (const sizes of [[1, 3], [1000, 70_001], [70_001, 1], [3, 0], [5, 1000, 7]]) {
  const dispatches = Math.ceil(sizes.length / 2);
  Deno.test({
    name: `ema: flat update of ${sizes.length} pairs in ${dispatches} dispatch(es) ` +
      `(sizes ${sizes.join(", ")})`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(sizes[0] + sizes[1]);
      const online = sizes.map((n) => rng.normals(n));
      const target = sizes.map((n) => rng.normals(n));
      const onlineT = online.map((a, i) => gpu.upload(a, [sizes[i]]));
      const targetT = target.map((a, i) => gpu.upload(a, [sizes[i]]));
      const m = momentumAt(300, 1000, 0.99);
      const before = gpu.dispatchCount;
      emaUpdateFlat(gpu, targetT, onlineT, m);
      assert.equal(gpu.dispatchCount - before, dispatches, "dispatches");
      const got = await gpu.read(targetT);
      // One f32 multiply-add around values of size ~1.
      sizes.forEach((n, i) => {
        const expected = Float64Array.from(
          { length: n },
          (_, j) => m * target[i][j] + (1 - m) * online[i][j],
        );
        assertClose(got[i], expected, { atol: 1e-6, rtol: 1e-6 }, `pair ${i}`);
      });
      for (const t of [...onlineT, ...targetT]) t.release();
    },
  });
}

Deno.test({
  name: "ema: flat update of one pair, and its argument checks",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const online = gpu.upload([1, 5, -3], [3]);
    const target = gpu.upload([0, 5, -3], [3]);
    emaUpdateFlat(gpu, [target], [online], 0.75);
    assertClose(await target.read(), [0.25, 5, -3], { atol: 1e-7, rtol: 0 }, "one pair");
    const other = gpu.zeros([3]);
    assert.throws(
      () => emaUpdateFlat(gpu, [target, target], [online, other], 0.5),
      /target 1 shares a buffer with another target/,
    );
    assert.throws(() => emaUpdateFlat(gpu, [target], [target], 0.5), /share a buffer/);
    assert.throws(() => emaUpdateFlat(gpu, [target], [online], 1.5), /outside \[0, 1\]/);
    for (const t of [online, target, other]) t.release();
  },
});
