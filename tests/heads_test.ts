/**
 * Head (projector / predictor) initialisation: torch's default stays as it was, and the released
 * code's inits (projector Kaiming-normal fan-in, predictor Normal(0, 0.01), biases 0) have the
 * stated statistics.
 */
import assert from "node:assert/strict";
import { gpuTest, Rng, testGpu } from "./util.ts";
import { Context } from "../models/layers.ts";
import { type HeadInit, Mlp } from "../models/heads.ts";
import { SslModel, type SslModelConfig } from "../models/ssl.ts";
import type { Gpu } from "../runtime/gpu.ts";

async function headValues(gpu: Gpu, init: HeadInit | undefined, seed: number) {
  const ctx = new Context(gpu);
  const mlp = new Mlp(
    ctx,
    "head",
    { inFeatures: 256, hidden: 512, outFeatures: 128, init },
    new Rng(seed),
  );
  const params = mlp.parameters();
  const values = await gpu.read(params.map((p) => p.value));
  const byName = new Map(params.map((p, i) => [p.name, values[i]]));
  for (const p of params) p.value.release();
  return byName;
}

function meanStd(values: ArrayLike<number>): { mean: number; std: number } {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i];
  const mean = sum / values.length;
  let squares = 0;
  for (let i = 0; i < values.length; i++) squares += (values[i] - mean) ** 2;
  return { mean, std: Math.sqrt(squares / values.length) };
}

Deno.test({
  name: "heads: torch-default init is U(+-1/sqrt(fan_in)) drawn in order (weight, bias per layer)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    for (const init of [undefined, "torch-default"] as const) {
      const got = await headValues(gpu, init, 11);
      // The same draws, replayed: fc1 weight [512, 256], fc1 bias, fc2 weight [128, 512], fc2 bias.
      const rng = new Rng(11);
      const draw = (n: number, fanIn: number) =>
        Float32Array.from(
          { length: n },
          () => rng.uniform(-1 / Math.sqrt(fanIn), 1 / Math.sqrt(fanIn)),
        );
      assert.deepEqual(got.get("head.0.weight"), draw(512 * 256, 256), `${init}: head.0.weight`);
      assert.deepEqual(got.get("head.0.bias"), draw(512, 256), `${init}: head.0.bias`);
      assert.deepEqual(got.get("head.3.weight"), draw(128 * 512, 512), `${init}: head.3.weight`);
      assert.deepEqual(got.get("head.3.bias"), draw(128, 512), `${init}: head.3.bias`);
      assert.deepEqual(got.get("head.1.weight"), new Float32Array(512).fill(1));
      assert.deepEqual(got.get("head.1.bias"), new Float32Array(512));
    }
  },
});

// With n >= 65536 draws the sample std of a normal is within ~0.3% (one standard error) of the
// target; allow 2%. The sample mean's standard error is std / sqrt(n) < 0.004 std: allow 0.02 std.
const STD_RTOL = 0.02;
const MEAN_ATOL_IN_STD = 0.02;

for (
  const [init, stdOf] of [
    ["kaiming-fan-in", (fanIn: number) => Math.sqrt(2 / fanIn)],
    ["normal-0.01", () => 0.01],
  ] as const
) {
  Deno.test({
    name: `heads: ${init} weights have mean 0 and the target std, biases exactly 0`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const got = await headValues(gpu, init, 3);
      for (const [name, fanIn] of [["head.0", 256], ["head.3", 512]] as const) {
        const target = stdOf(fanIn);
        const { mean, std } = meanStd(got.get(`${name}.weight`)!);
        assert.ok(
          Math.abs(std - target) <= STD_RTOL * target,
          `${name}.weight std ${std}, target ${target} (+-${STD_RTOL * 100}%)`,
        );
        assert.ok(
          Math.abs(mean) <= MEAN_ATOL_IN_STD * target,
          `${name}.weight mean ${mean}, want |mean| <= ${MEAN_ATOL_IN_STD * target}`,
        );
        assert.ok(got.get(`${name}.bias`)!.every((v) => v === 0), `${name}.bias all exactly 0`);
      }
      assert.deepEqual(got.get("head.1.weight"), new Float32Array(512).fill(1));
      assert.deepEqual(got.get("head.1.bias"), new Float32Array(512));
    },
  });
}

const SMALL: SslModelConfig = {
  backbone: { arch: "resnet18", inChannels: 1, smallImage: true, widths: [4, 8, 16, 32] },
  projectorHidden: 64,
  projectorOut: 16,
  predictorHidden: 32,
  loss: { kind: "byol" },
};

Deno.test({
  name:
    "heads: SslModel headInit: default = torch-default bitwise; released changes only the heads",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const read = async (config: SslModelConfig) => {
      const model = new SslModel(gpu, config, 2, 5, {
        momentum: 0.9,
        weightDecay: 1e-6,
        eta: 0.001,
      });
      const params = model.online.parameters();
      const values = await gpu.read(params.map((p) => p.value));
      return new Map(params.map((p, i) => [p.name, values[i]]));
    };
    const byDefault = await read(SMALL);
    const torchDefault = await read({ ...SMALL, headInit: "torch-default" });
    const released = await read({ ...SMALL, headInit: "released" });
    for (const [name, values] of byDefault) {
      assert.deepEqual(torchDefault.get(name), values, `${name}: torch-default = default`);
      if (!name.startsWith("projector.") && !name.startsWith("predictor.")) {
        assert.deepEqual(released.get(name), values, `${name}: backbone unchanged by headInit`);
      }
    }
    // Released: projector Kaiming fan-in (fan_in 32 and 64), predictor Normal(0, 0.01).
    const checks: [string, number][] = [
      ["projector.0", Math.sqrt(2 / 32)],
      ["projector.3", Math.sqrt(2 / 64)],
      ["predictor.0", 0.01],
      ["predictor.3", 0.01],
    ];
    for (const [layer, target] of checks) {
      const weight = released.get(`${layer}.weight`)!;
      // 1024-2048 draws: the sample std is within ~2.2% (one standard error); allow 10%.
      const { std } = meanStd(weight);
      assert.ok(Math.abs(std - target) <= 0.1 * target, `${layer}.weight std ${std} vs ${target}`);
      assert.ok(released.get(`${layer}.bias`)!.every((v) => v === 0), `${layer}.bias all 0`);
    }
    await assert.rejects(
      async () => await read({ ...SMALL, headInit: "kaiming" as "released" }),
      /headInit "kaiming" is not "torch-default" or "released"/,
    );
  },
});
