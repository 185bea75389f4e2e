/**
 * train.ts's flag resolution (no GPU): the recipe flags reach the resolved config, the crop scale
 * reaches both augmented views, and out-of-range values are refused with the flag's name.
 */
import assert from "node:assert/strict";
import { augmentConfig, resolveConfig } from "../tasks/train_config.ts";
import { PRESETS } from "../tasks/presets.ts";

Deno.test("train config: the small preset's recipe and its crop scale on both views", () => {
  const config = resolveConfig({});
  assert.equal(config.emaBase, PRESETS.small.emaBase);
  assert.equal(config.warmupEpochs, PRESETS.small.warmupEpochs);
  assert.deepEqual(
    augmentConfig(config).views.map((v) => v.crop.scale),
    [[PRESETS.small.cropScaleMin, 1], [PRESETS.small.cropScaleMin, 1]],
  );
  // The ImageNet preset keeps METHOD.md's 0.08.
  const imagenet = resolveConfig({ preset: "resnet50-imagenet", data: "/tmp/images" });
  assert.equal(imagenet.cropScaleMin, undefined);
  assert.deepEqual(augmentConfig(imagenet).views.map((v) => v.crop.scale), [[0.08, 1], [0.08, 1]]);
});

Deno.test("train config: --ema-base, --warmup-epochs and --crop-scale override the preset", () => {
  const config = resolveConfig({ "ema-base": "0.996", "warmup-epochs": "2", "crop-scale": "0.2" });
  assert.equal(config.emaBase, 0.996);
  assert.equal(config.warmupEpochs, 2);
  assert.equal(config.cropScaleMin, 0.2);
  assert.deepEqual(augmentConfig(config).views.map((v) => v.crop.scale), [[0.2, 1], [0.2, 1]]);
  assert.deepEqual(config.overrides, {
    "ema-base": "0.996",
    "warmup-epochs": "2",
    "crop-scale": "0.2",
  });
});

Deno.test("train config: out-of-range recipe flags are refused by name", () => {
  assert.throws(() => resolveConfig({ "ema-base": "1" }), /--ema-base must be in \[0, 1\), got 1/);
  assert.throws(() => resolveConfig({ "warmup-epochs": "-1" }), /--warmup-epochs must be >= 0/);
  assert.throws(() => resolveConfig({ "crop-scale": "0" }), /--crop-scale must be in \(0, 1\]/);
  assert.throws(() => resolveConfig({ "crop-scale": "x" }), /--crop-scale must be a number/);
});
