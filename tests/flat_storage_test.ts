import assert from "node:assert/strict";
import { gpuTest, Rng, testGpu } from "./util.ts";
import { fill } from "../kernels/elementwise.ts";
import {
  BatchNorm,
  Context,
  Conv2d,
  flattenParameters,
  flattenStates,
  isLayoutPrefix,
  Linear,
  type Parameter,
} from "../models/layers.ts";

/** Conv (3x3, 3 -> 5 channels) -> BatchNorm+ReLU -> Linear(5 -> 1): awkward sizes, one bias of 1. */
function tinyNetwork(ctx: Context, seed: number) {
  const rng = new Rng(seed);
  const conv = new Conv2d(ctx, "conv", 3, 5, 3, 1, 1, rng, true);
  const bn = new BatchNorm(ctx, "bn", 5, true);
  const fc = new Linear(ctx, "fc", 5, 1, rng);
  const parameters = (): Parameter[] => [
    ...conv.parameters(),
    ...bn.parameters(),
    ...fc.parameters(),
  ];
  const x = ctx.gpu.upload(rng.normals(2 * 4 * 4 * 3), [2, 4, 4, 3]);
  return { conv, bn, fc, parameters, x };
}

Deno.test({
  name: "flat storage: parameters and states moved into one buffer per kind keep their values " +
    "and train bitwise as before; each tensor starts on a 256-byte boundary",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const run = async (flatten: boolean) => {
      const ctx = new Context(gpu);
      const net = tinyNetwork(ctx, 5);
      const before = await gpu.read(net.parameters().map((p) => p.value));
      let flat;
      if (flatten) {
        flat = flattenParameters(gpu, net.parameters());
        flattenStates(gpu, net.bn.states());
      }
      const h = net.bn.forward(net.conv.forward(net.x));
      const y = net.fc.forward(h.reshape([32, 5]));
      const dh = net.fc.backward(y)!;
      net.conv.backward(net.bn.backward(dh.reshape([2, 4, 4, 5])), false);
      const values = await gpu.read(net.parameters().map((p) => p.value));
      const grads = await gpu.read([y, ...net.parameters().map((p) => p.grad)]);
      const states = await gpu.read(net.bn.states().map((s) => s.value));
      return { net, before, values, grads, states, flat };
    };
    const plain = await run(false);
    const flat = await run(true);
    const { layout, values, grads } = flat.flat!;
    // Same values after the move, and the same forward/backward bits.
    plain.before.forEach((v, i) => assert.deepEqual(Array.from(flat.values[i]), Array.from(v)));
    plain.grads.forEach((g, i) => assert.deepEqual(Array.from(flat.grads[i]), Array.from(g)));
    plain.states.forEach((s, i) => assert.deepEqual(Array.from(flat.states[i]), Array.from(s)));
    // One buffer per kind, 256-byte aligned views in order.
    const parameters = flat.net.parameters();
    assert.deepEqual(layout.names, parameters.map((p) => p.name));
    parameters.forEach((p, i) => {
      assert.equal(p.value.buffer, values.buffer, `${p.name} value in the flat buffer`);
      assert.equal(p.grad.buffer, grads.buffer, `${p.name} grad in the flat buffer`);
      assert.equal(p.value.byteOffset, 4 * layout.offsets[i]);
      assert.equal(p.value.byteOffset % 256, 0, `${p.name} offset`);
    });
    // One fill zeroes every gradient.
    fill(gpu, grads, 0);
    for (const g of await gpu.read(parameters.map((p) => p.grad))) {
      assert.ok(g.every((v) => v === 0), "gradients zeroed");
    }
  },
});

Deno.test({
  name: "flat storage: isLayoutPrefix accepts a network's first tensors and nothing else",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rng = new Rng(1);
    const ctx = new Context(gpu);
    const a = [new Linear(ctx, "a", 3, 7, rng), new Linear(ctx, "b", 7, 2, rng)];
    const b = [new Linear(ctx, "a", 3, 7, rng)];
    const c = [new Linear(ctx, "a", 3, 6, rng)];
    const full = flattenParameters(gpu, a.flatMap((l) => l.parameters())).layout;
    const prefix = flattenParameters(gpu, b.flatMap((l) => l.parameters())).layout;
    const other = flattenParameters(gpu, c.flatMap((l) => l.parameters())).layout;
    assert.ok(isLayoutPrefix(prefix, full));
    assert.ok(isLayoutPrefix(full, full));
    assert.ok(!isLayoutPrefix(full, prefix), "longer than the layout");
    assert.ok(!isLayoutPrefix(other, full), "a size differs");
  },
});
