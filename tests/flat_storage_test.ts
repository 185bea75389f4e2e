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
import { SslModel, type SslModelConfig } from "../models/ssl.ts";

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
    assert.equal(flat.flat!.length, 1, "one group under the adapter's binding limit");
    const [{ layout, values, grads }] = flat.flat!;
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
    const layouts = (layers: Linear[]) =>
      flattenParameters(gpu, layers.flatMap((l) => l.parameters())).map((g) => g.layout);
    const [full, prefix, other] = [layouts(a), layouts(b), layouts(c)];
    assert.ok(isLayoutPrefix(prefix, full));
    assert.ok(isLayoutPrefix(full, full));
    assert.ok(!isLayoutPrefix(full, prefix), "longer than the layout");
    assert.ok(!isLayoutPrefix(other, full), "a size differs");
  },
});

Deno.test({
  name: "flat storage: groups of at most maxGroupBytes (a model over one binding's limit) keep " +
    "the values, train bitwise as one group, and prefixes compare group by group",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const run = async (maxGroupBytes?: number) => {
      const ctx = new Context(gpu);
      const net = tinyNetwork(ctx, 5);
      const before = await gpu.read(net.parameters().map((p) => p.value));
      const groups = flattenParameters(gpu, net.parameters(), maxGroupBytes);
      const h = net.bn.forward(net.conv.forward(net.x));
      const y = net.fc.forward(h.reshape([32, 5]));
      const dh = net.fc.backward(y)!;
      net.conv.backward(net.bn.backward(dh.reshape([2, 4, 4, 5])), false);
      const grads = await gpu.read(net.parameters().map((p) => p.grad));
      return { net, before, grads, groups };
    };
    const one = await run();
    // conv.weight (135 floats) takes a 768-byte slot, every other tensor 256 bytes: with 1 KiB
    // groups, [conv.weight, conv.bias] and [bn.weight, bn.bias, fc.weight, fc.bias].
    const split = await run(1024);
    assert.deepEqual(
      split.groups.map((g) => g.layout.names),
      [["conv.weight", "conv.bias"], ["bn.weight", "bn.bias", "fc.weight", "fc.bias"]],
    );
    assert.deepEqual(split.groups.map((g) => g.layout.first), [0, 2]);
    const parameters = split.net.parameters();
    for (const { layout, values, grads } of split.groups) {
      assert.ok(4 * layout.length <= 1024, `group of ${4 * layout.length} bytes`);
      layout.names.forEach((name, i) => {
        const p = parameters[layout.first + i];
        assert.equal(p.name, name);
        assert.equal(p.value.buffer, values.buffer, `${name} value in its group's buffer`);
        assert.equal(p.grad.buffer, grads.buffer, `${name} grad in its group's buffer`);
        assert.equal(p.value.byteOffset, 4 * layout.offsets[i], `${name} offset`);
      });
    }
    assert.notEqual(split.groups[0].values.buffer, split.groups[1].values.buffer);
    one.before.forEach((v, i) => assert.deepEqual(Array.from(split.before[i]), Array.from(v)));
    one.grads.forEach((g, i) => assert.deepEqual(Array.from(split.grads[i]), Array.from(g)));
    // A tensor larger than a group is refused by name.
    const rng = new Rng(2);
    assert.throws(
      () =>
        flattenParameters(gpu, new Linear(new Context(gpu), "big", 300, 1, rng).parameters(), 1024),
      /big\.weight needs 1280 bytes, over the 1024-byte limit/,
    );
    // Prefixes over groups: the target-like first tensors group the same way.
    const layouts = (count: number) =>
      flattenParameters(gpu, tinyNetwork(new Context(gpu), 5).parameters().slice(0, count), 1024)
        .map((g) => g.layout);
    const full = split.groups.map((g) => g.layout);
    assert.ok(isLayoutPrefix(layouts(5), full), "last group partial");
    assert.ok(isLayoutPrefix(layouts(2), full), "whole groups");
    assert.ok(isLayoutPrefix(layouts(1), full), "first group partial");
    assert.ok(!isLayoutPrefix(full, layouts(5)), "longer than the layout");
    const regrouped = flattenParameters(
      gpu,
      tinyNetwork(new Context(gpu), 5).parameters().slice(0, 3),
      2048,
    ).map((g) => g.layout);
    assert.ok(!isLayoutPrefix(regrouped, full), "grouped differently");
  },
});

Deno.test({
  name: "flat storage: an SslModel split into 16 KiB groups (one LARS dispatch per group, EMA " +
    "two groups per dispatch) trains 2 steps bitwise as with one group",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const config: SslModelConfig = {
      backbone: { arch: "resnet18", inChannels: 1, smallImage: true, widths: [4, 8, 8, 16] },
      projectorHidden: 32,
      projectorOut: 16,
      predictorHidden: 32,
      loss: { kind: "byol" },
    };
    const batch = 4;
    const rng = new Rng(9);
    const views = Array.from(
      { length: 4 },
      () => gpu.upload(rng.normals(batch * 8 * 8), [batch, 8, 8, 1]),
    );
    const train = async (maxFlatGroupBytes?: number) => {
      const model = new SslModel(
        gpu,
        config,
        batch,
        3,
        { momentum: 0.9, weightDecay: 1e-4, eta: 0.02 },
        { maxFlatGroupBytes },
      );
      const loss = gpu.zeros([2]);
      let larsDispatches = 0;
      const stop = gpu.observeDispatches(({ kernel }) => {
        if (kernel.name.includes("optimizer_flat")) larsDispatches++;
      });
      for (let step = 0; step < 2; step++) {
        model.step([{ view1: views[2 * step], view2: views[2 * step + 1] }], 0.5, 0.9, loss);
      }
      stop();
      const tensors = [
        ...model.online.parameters().map((p) => p.value),
        ...model.online.states().map((s) => s.value),
        ...model.velocity,
        ...model.target.parameters().map((p) => p.value),
        ...model.target.states().map((s) => s.value),
        model.norms,
      ];
      return { groups: model.flatGroups, larsDispatches, values: await gpu.read(tensors) };
    };
    const one = await train();
    const split = await train(16 * 1024);
    assert.equal(one.groups, 1);
    assert.ok(split.groups >= 3, `${split.groups} groups`);
    assert.equal(one.larsDispatches, 2, "one LARS dispatch per step");
    assert.equal(split.larsDispatches, 2 * split.groups, "one LARS dispatch per group and step");
    one.values.forEach((v, i) =>
      assert.deepEqual(Array.from(split.values[i]), Array.from(v), `tensor ${i}`)
    );
  },
});
