/**
 * train.ts's flag resolution (no GPU): the recipe flags reach the resolved config, the crop scale
 * reaches both augmented views, and out-of-range values are refused with the flag's name; --config
 * files (a run's config.json resolves to itself; bad keys refused by name); departures that follow
 * the flags.
 */
import assert from "node:assert/strict";
import { augmentConfig, resolveConfig, trainHelp } from "../tasks/train_config.ts";
import { fallbackWarning } from "../tasks/train_run.ts";
import { UserError } from "../tasks/cli.ts";
import { PRESETS } from "../tasks/presets.ts";
import { readConfigFile } from "../tasks/config_file.ts";

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

Deno.test("train config: the resnet50-imagenet preset is the released recipe on one device", () => {
  const c = resolveConfig({ preset: "resnet50-imagenet", data: "/tmp/images" });
  assert.equal(c.arch, "resnet50");
  assert.deepEqual(c.widths, [64, 128, 256, 512]);
  assert.equal(c.smallImage, false);
  assert.equal(c.imageSize, 224);
  assert.equal(c.batch, 196); // 195 negatives per row, what the window [2, 10] was chosen for
  assert.equal(c.accum, 32); // effective 6272
  assert.equal(c.lr, 4.8);
  assert.equal(c.lrSchedule, "released");
  assert.equal(c.warmupEpochs, 10);
  assert.equal(c.epochs, 200);
  assert.equal(c.emaBase, 0.99);
  assert.deepEqual([c.momentum, c.weightDecay, c.eta], [0.9, 1e-6, 0.001]);
  assert.deepEqual([c.projectorHidden, c.projectorOut, c.predictorHidden], [4096, 256, 4096]);
  const { kind, window, margin, gamma } = c.loss;
  assert.deepEqual({ kind, window, margin, gamma }, {
    kind: "triplet",
    window: [2, 10],
    margin: 100,
    gamma: 2,
  });
  assert.equal(c.randomRescale, true);
  assert.equal(c.headInit, "released");
  assert.equal(c.augment, "imagenet");
  assert.ok(c.deviations.some((d) => /downsample\.1\.weight/.test(d)), "LARS exclusion listed");
  assert.ok(c.deviations.some((d) => /linear probe on cached features/.test(d)), "probe listed");
});

Deno.test("train config: the small preset's values and its listed departures", () => {
  const c = resolveConfig({});
  assert.deepEqual(c.widths, [8, 16, 32, 64]);
  assert.deepEqual([c.batch, c.accum, c.steps, c.lr, c.lrSchedule], [64, 1, 1250, 3, "per-step"]);
  assert.deepEqual(c.loss.window, [11, 19]);
  for (
    const pattern of [/per-branch batch rescale/, /bilinear/, /blur sigma scaled/, /downsample/]
  ) {
    assert.ok(c.deviations.some((d) => pattern.test(d)), `departure ${pattern} listed`);
  }
});

Deno.test("train config: without --lr the learning rate follows batch x accum", () => {
  assert.equal(resolveConfig({ accum: "2" }).lr, 6); // small: 3.0 at 64 x 1
  assert.equal(resolveConfig({ batch: "32" }).lr, 1.5);
  assert.equal(resolveConfig({ batch: "32", accum: "4" }).lr, 6);
  assert.equal(resolveConfig({ accum: "2", lr: "0.5" }).lr, 0.5);
  const imagenet = { preset: "resnet50-imagenet", data: "/tmp/images" };
  assert.equal(resolveConfig({ ...imagenet, accum: "16" }).lr, 2.4);
  assert.equal(resolveConfig({ ...imagenet, batch: "49", accum: "8" }).lr, 4.8 * 392 / 6272);
});

Deno.test("train config: --blur-sigma replaces both views' blur range; bad ranges are refused", () => {
  const config = resolveConfig({ "blur-sigma": "0.1,1" });
  assert.deepEqual(augmentConfig(config).views.map((v) => v.blur.sigma), [[0.1, 1], [0.1, 1]]);
  assert.deepEqual(
    augmentConfig(resolveConfig({})).views.map((v) => v.blur.sigma),
    [[0.1 * 28 / 224, 2 * 28 / 224], [0.1 * 28 / 224, 2 * 28 / 224]],
  );
  assert.throws(() => resolveConfig({ "blur-sigma": "2,1" }), /--blur-sigma must be A,B/);
});

/** A --config file with `json` as its text, its path. */
async function configFile(json: string): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.writeTextFile(path, json);
  return path;
}

Deno.test("train config: a run's config.json read back with --config resolves to the same config", async () => {
  for (
    const flags of [
      { widths: "4,8,8,16", batch: "16", steps: "4", "eval-bank": "256", "no-probe": true },
      { loss: "rank-k", k: "5", "ema-base": "0.99", "blur-sigma": "0.1,1", epochs: "2" },
      { preset: "resnet50-imagenet", data: "/tmp/images", batch: "2", accum: "1" },
    ]
  ) {
    const original = JSON.parse(JSON.stringify(resolveConfig(flags)));
    const file = await readConfigFile(await configFile(JSON.stringify(original, null, 1)));
    assert.deepEqual(JSON.parse(JSON.stringify(resolveConfig({}, 1, file))), original);
  }
});

Deno.test("train config: a partial --config file fills the rest from its preset; flags override it", async () => {
  const file = await readConfigFile(
    await configFile('{"steps": 5, "lr": 2, "emaBase": 0.95, "loss": {"kind": "infonce"}}'),
  );
  const config = resolveConfig({ lr: "1" }, 1, file);
  assert.deepEqual([config.steps, config.lr, config.emaBase], [5, 1, 0.95]);
  assert.equal(config.loss.kind, "infonce");
  assert.equal(
    config.loss.temperature,
    PRESETS.small.loss.temperature,
    "the preset's loss fills in",
  );
  assert.deepEqual(config.widths, PRESETS.small.widths);
  assert.deepEqual(config.overrides, { lr: "1" });
  // A file that runs by epochs is not cut short by the preset's step count.
  assert.equal(resolveConfig({}, 1, { epochs: 2 }).steps, undefined);
  assert.equal(resolveConfig({ steps: "3" }, 1, { epochs: 2 }).steps, 3);
});

const BAD_CONFIG_FILES: [string, string, RegExp][] = [
  ["an unknown key", '{"learningRate": 1}', /unknown key "learningRate": .*remove it or fix/],
  [
    "a wrong type",
    '{"steps": "100"}',
    /"steps" must be a non-negative integer, got "100".*--steps/,
  ],
  ["an out-of-range value", '{"emaBase": 1.5}', /"emaBase" must be a number in \[0, 1\), got 1.5/],
  ["an inherited name", '{"hasOwnProperty": "x"}', /unknown key "hasOwnProperty"/],
  ["a prototype key", '{"constructor": 1}', /unknown key "constructor"/],
  [
    "an inherited loss key",
    '{"loss": {"kind": "triplet", "toString": 1}}',
    /unknown key "loss.toString"/,
  ],
  ["a bad nested loss key", '{"loss": {"kind": "triplet", "windw": [2, 10]}}', /"loss.windw"/],
  ["a bad window", '{"loss": {"kind": "triplet", "window": [10, 2]}}', /"loss.window" must be/],
  ["an unknown preset", '{"preset": "huge"}', /"preset" must be one of small/],
  ["a batch of one", '{"batch": 1}', /"batch" must be an integer >= 2/],
  ["not an object", "[1, 2]", /expected a JSON object/],
  ["corrupt JSON", '{"steps": 4', /is not valid JSON/],
];

for (const [what, json, message] of BAD_CONFIG_FILES) {
  Deno.test(`train config: a --config file with ${what} is refused by key`, async () => {
    const path = await configFile(json);
    await assert.rejects(readConfigFile(path), (e: Error) => {
      assert.ok(e instanceof UserError && e.exitCode === 2, String(e));
      assert.match(e.message, message);
      assert.ok(e.message.includes(path), "names the file");
      return true;
    });
  });
}

Deno.test("train config: a missing --config file or a directory is refused", async () => {
  await assert.rejects(readConfigFile("/nonexistent/run.json"), /no such file/);
  await assert.rejects(readConfigFile(await Deno.makeTempDir()), /is a directory/);
});

Deno.test("train config: the departures follow the flags, not the preset's text", () => {
  // Without flags: exactly the preset's departures.
  assert.deepEqual(resolveConfig({}).deviations, PRESETS.small.deviations);
  const config = resolveConfig({ steps: "40", "ema-base": "0.99", lr: "1", loss: "infonce" });
  const text = config.deviations.join("\n");
  assert.doesNotMatch(text, /^1,250 steps/m, "the preset's length is not claimed");
  assert.doesNotMatch(text, /EMA base momentum 0.9 instead/, "nor its EMA base");
  assert.doesNotMatch(text, /^batch 64 on one device; lr 3.0/m, "nor its learning rate");
  assert.match(text, /^40 steps \(preset small: 1250 steps; released recipe: 200 epochs\)$/m);
  assert.match(text, /^emaBase 0.99 \(preset small: emaBase 0.9; released recipe: emaBase 0.99\)/m);
  assert.match(text, /^lr 1 \(preset small: lr 3;/m);
  // The unchanged values the dropped departure described are still listed.
  assert.match(text, /^batch 64 x accum 1 x 1 process = 64 images per step \(as preset small;/m);
  assert.match(text, /^loss infonce \(window \[11,19\], margin 100, gamma 2, temperature 0.1\)/m);
  // The departures that the flags do not touch stay word for word.
  assert.ok(config.deviations.includes(PRESETS.small.deviations[0]));
  // A smaller batch scales the learning rate, and says so; the window shrink is named.
  const small = resolveConfig({ batch: "16" }).deviations.join("\n");
  assert.match(small, /^lr 0.75 \(preset small: lr 3; scaled with the images per step;/m);
  assert.match(small, /^window \[11,19\] shrunk to \[11,15\]: a batch of 16 has only 15/m);
});

Deno.test("train config: the folder-96 preset, --labels / --eval / --eval-data and their checks", () => {
  const c = resolveConfig({ preset: "folder-96", data: "/tmp/photos" });
  assert.deepEqual(
    [c.arch, c.widths, c.smallImage, c.imageSize, c.dataset, c.batch, c.augment, c.knnK],
    ["resnet18", [64, 128, 256, 512], false, 96, "folder", 128, "imagenet", 20],
  );
  assert.deepEqual(augmentConfig(c).views.map((v) => v.crop.scale), [[0.2, 1], [0.2, 1]]);
  assert.deepEqual(augmentConfig(c).views.map((v) => v.blur.sigma), [
    [0.1 * 96 / 224, 2 * 96 / 224],
    [0.1 * 96 / 224, 2 * 96 / 224],
  ]);
  assert.equal(c.labels, undefined);
  assert.equal(c.evaluation, undefined);
  const flagged = resolveConfig({
    preset: "folder-96",
    data: "/tmp/photos",
    labels: "none",
    "eval-data": "/tmp/labelled",
  });
  assert.deepEqual([flagged.labels, flagged.evalData], ["none", "/tmp/labelled"]);
  assert.equal(resolveConfig({ eval: "none" }).evaluation, "none");
  const refused: [Record<string, string>, RegExp][] = [
    [{ dataset: "folder" }, /--dataset folder needs --data DIR \(a folder of images, any layout/],
    [{ preset: "folder-96", data: "/x", labels: "maybe" }, /--labels must be one of auto/],
    [{ eval: "sometimes" }, /--eval must be one of auto, none/],
    [{ labels: "none" }, /--labels applies to --dataset folder only, not fashion-mnist/],
    [{ "eval-data": "/x" }, /--eval-data applies to --dataset folder only/],
    [
      { preset: "folder-96", data: "/x", "eval-data": "/y", eval: "none" },
      /--eval none turns evaluation off/,
    ],
  ];
  for (const [flags, message] of refused) {
    assert.throws(
      () => resolveConfig(flags),
      (e: Error) => e instanceof UserError && message.test(e.message),
    );
  }
  assert.match(trainHelp(), /--preset NAME\s+small \| folder-96 \| resnet50-imagenet/);
  assert.match(trainHelp(), /--labels MODE\s+folder labels: auto/);
});

Deno.test("train config: the loud fallback-adapter warning is for large runs on a CPU adapter", () => {
  const memory = { stepBytes: 2 ** 20, largestTensorBytes: 0, largestAt: "", maxBatch: 1 };
  const cpu = { isFallback: true, adapterName: "llvmpipe" };
  const gpu = { isFallback: false, adapterName: "H200" };
  const folder = resolveConfig({ preset: "folder-96", data: "/x" });
  const warning = fallbackWarning(folder, cpu, memory);
  assert.match(warning ?? "", /WARNING: preset folder-96 .* FALLBACK CPU adapter "llvmpipe"/s);
  assert.equal(fallbackWarning(folder, gpu, memory), undefined);
  assert.equal(fallbackWarning(resolveConfig({}), cpu, memory), undefined);
  // Any preset whose estimated step is large (here 2 GiB of activations) is warned about.
  assert.match(
    fallbackWarning(resolveConfig({}), cpu, { ...memory, stepBytes: 2 ** 31 }) ?? "",
    /preset small .*~2\.0 GiB of activations per step/s,
  );
});

Deno.test("train config: --config values are checked against each other as the flags are", () => {
  // A file that changes only the batch scales the preset's lr as --batch does; a file that sets
  // the lr (a run's config.json) keeps it.
  assert.equal(resolveConfig({}, 1, { batch: 128 }).lr, resolveConfig({ batch: "128" }).lr);
  assert.equal(resolveConfig({}, 1, { batch: 128 }).lr, PRESETS.small.lr * 2);
  assert.equal(resolveConfig({}, 1, { batch: 128, lr: 1.5 }).lr, 1.5);
  assert.equal(resolveConfig({ batch: "32" }, 1, { batch: 128, lr: 1.5 }).lr, 1.5 / 4);
  // The file's own window does not fit its batch: refused like --window, not shrunk.
  assert.throws(
    () => resolveConfig({}, 1, { batch: 8, loss: { kind: "triplet", window: [2, 200] } }),
    (e: Error) =>
      e instanceof UserError && /--config's loss.window 2,200 needs 200/.test(e.message),
  );
  // The preset's window in a file still shrinks to a small batch, as without the file.
  assert.deepEqual(
    resolveConfig({ batch: "8" }, 1, { loss: { ...PRESETS.small.loss } }).loss.window,
    [7, 7],
  );
  // evalData is an image folder to evaluate a folder run on; any other dataset refuses it.
  assert.throws(
    () => resolveConfig({}, 1, { evalData: "/x" }),
    (e: Error) =>
      e instanceof UserError && /evalData \/x applies to --dataset folder only/.test(e.message),
  );
  // So are labels: a file's labels for fashion-mnist would otherwise be ignored without a word.
  assert.throws(
    () => resolveConfig({}, 1, { labels: "none" }),
    (e: Error) =>
      e instanceof UserError &&
      /--config's labels none applies to --dataset folder only, not fashion-mnist/.test(e.message),
  );
  // A folder run's file keeps them.
  assert.equal(
    resolveConfig({ dataset: "folder", data: "/x" }, 1, { labels: "none" }).labels,
    "none",
  );
});

Deno.test("train config: the folder-96 preset's departures follow the flags too", () => {
  const unchanged = resolveConfig({ preset: "folder-96", data: "/x" }).deviations;
  assert.deepEqual(unchanged, PRESETS["folder-96"].deviations);
  const text = resolveConfig({
    preset: "folder-96",
    data: "/x",
    batch: "64",
    epochs: "5",
    "crop-scale": "0.5",
  }).deviations.join("\n");
  assert.doesNotMatch(text, /^batch 128 on one device/m, "the preset's batch is not claimed");
  assert.doesNotMatch(text, /^100 epochs/m, "nor its length");
  assert.doesNotMatch(text, /^crop scale from 0.2/m, "nor its crop scale");
  assert.match(text, /^batch 64 x accum 1 x 1 process = 64 images per step \(preset folder-96:/m);
  assert.match(text, /^lr 1 \(preset folder-96: lr 2; scaled with the images per step;/m);
  assert.match(text, /^5 epochs \(preset folder-96: 100 epochs;/m);
  assert.match(text, /^cropScaleMin 0.5 \(preset folder-96: cropScaleMin 0.2;/m);
  // Departures untouched by the flags stay word for word.
  assert.ok(text.includes(PRESETS["folder-96"].deviations[0]));
});
