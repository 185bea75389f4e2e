/**
 * The training task end to end, as a user runs it (subprocesses): the run directory and its
 * fields, resume equality, Ctrl-C checkpoints, the NaN stop, and one clear message per bad input.
 * Shapes are tiny (widths 4/8/8/16, batch 16, a few steps) so CI stays fast.
 */
import assert from "node:assert/strict";
import { encode as encodePng } from "fast-png";
import { TINY_TRAIN_FLAGS } from "./util.ts";
import { METRICS_CSV_COLUMNS } from "../models/training_log.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const TINY = TINY_TRAIN_FLAGS;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function train(args: string[], signalAfterFirstLog?: { metrics: string }): Promise<Result> {
  const command = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", `${ROOT}tasks/train.ts`, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  });
  const child = command.spawn();
  if (signalAfterFirstLog) {
    // Wait for the first metrics line, then press Ctrl-C.
    for (let i = 0; i < 600; i++) {
      const text = await Deno.readTextFile(signalAfterFirstLog.metrics).catch(() => "");
      if (text.trim().length > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill("SIGINT");
  }
  const out = await child.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

async function metrics(dir: string): Promise<Record<string, unknown>[]> {
  const text = await Deno.readTextFile(`${dir}/metrics.jsonl`);
  return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
}

/** The fields that must not depend on timing. */
function deterministic(lines: Record<string, unknown>[]): unknown[] {
  return lines.map((m) => [m.step, m.loss ?? null, m.lr ?? null, m.ema ?? null, m.knnTop1 ?? null]);
}

const TEST = { sanitizeOps: false, sanitizeResources: false };

// The system Python with PyTorch, where present (CI has none: that check is skipped there).
const PYTHON = Deno.env.get("TRITRAIN_PYTHON") ?? "/usr/bin/python3";
async function pythonHasTorch(): Promise<boolean> {
  try {
    const { code } = await new Deno.Command(PYTHON, { args: ["-c", "import torch"] }).output();
    return code === 0;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "train task: run directory files and fields; --config of its config.json repeats it; an interrupted and resumed run equals an uninterrupted one",
  ...TEST,
  fn: async () => {
    const base = await Deno.makeTempDir();
    const whole = `${base}/whole`;
    const parts = `${base}/parts`;
    const common = [...TINY, "--steps", "4", "--eval-every", "2", "--seed", "3"];
    const a = await train([...common, "--out", whole]);
    assert.equal(a.code, 0, a.stderr + a.stdout);
    for (
      const file of [
        "config.json",
        "metrics.jsonl",
        "metrics.csv",
        "checkpoint.safetensors",
        "summary.json",
        "curves.svg",
      ]
    ) {
      assert.ok((await Deno.stat(`${whole}/${file}`)).size > 0, `${file} written`);
    }
    const config = JSON.parse(await Deno.readTextFile(`${whole}/config.json`));
    assert.equal(config.batch, 16);
    assert.deepEqual(config.widths, [4, 8, 8, 16]);
    assert.equal(config.loss.kind, "triplet");
    assert.ok(Array.isArray(config.deviations) && config.deviations.length > 0);
    const summary = JSON.parse(await Deno.readTextFile(`${whole}/summary.json`));
    for (
      const key of ["knnTop1", "linearTop1", "steps", "wallSeconds", "imagesPerSecond", "adapter"]
    ) {
      assert.ok(key in summary, `summary.json has ${key}`);
    }
    assert.equal(summary.steps, 4);
    // The end-of-run pictures and their numbers: the kNN confusion matrix over the 128 test
    // images agrees exactly with the final kNN top-1 (same bank, same vote). Whether training
    // beats the untrained network is the experiment test's job (tests/experiment_test.ts).
    const confusion = summary.confusion as number[][];
    assert.equal(confusion.length, 10);
    assert.equal(confusion.flat().reduce((a, b) => a + b, 0), 128);
    const diagonal = confusion.reduce((sum, row, c) => sum + row[c], 0);
    assert.equal(diagonal / 128, summary.knnTop1, "confusion trace = kNN top-1");
    assert.equal(summary.perClassKnnTop1.length, 10);
    for (const picture of ["retrieval", "map", "confusion"]) {
      const png = await Deno.readFile(`${whole}/insight.${picture}.png`);
      assert.deepEqual(Array.from(png.subarray(1, 4)), [80, 78, 71], `${picture} is a PNG`);
    }
    assert.match(await Deno.readTextFile(`${whole}/curves.svg`), /^<svg/);
    const wholeMetrics = await metrics(whole);
    assert.equal(wholeMetrics.filter((m) => "loss" in m).length, 4, "one loss line per step");
    assert.equal(wholeMetrics.filter((m) => "knnTop1" in m).length, 2, "evaluations at 2 and 4");

    // The printed departures follow the flags: the tiny run's length, not the preset's.
    assert.match(
      a.stdout,
      /^ {2}- 4 steps \(preset small: 1250 steps; released recipe: 200 epochs\)$/m,
    );
    assert.doesNotMatch(a.stdout, /1,250 steps \(~1.3 epochs\)/);

    // The run's config.json repeats it exactly: same config, bitwise the same losses.
    const repeat = `${base}/repeat`;
    const r = await train(["--config", `${whole}/config.json`, "--out", repeat, "--no-pictures"]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${repeat}/config.json`)), config);
    assert.deepEqual(deterministic(await metrics(repeat)), deterministic(wholeMetrics));

    const b = await train([...common, "--out", parts, "--stop-after", "2"]);
    assert.equal(b.code, 130, b.stderr + b.stdout);
    assert.match(b.stdout, /continue with: deno task train --resume/);
    const c = await train(["--resume", parts]);
    assert.equal(c.code, 0, c.stderr + c.stdout);
    assert.deepEqual(deterministic(await metrics(parts)), deterministic(wholeMetrics));
    // metrics.csv: the header and one row per metrics.jsonl line, after a resume as well.
    for (const dir of [whole, parts]) {
      const [header, ...rows] = (await Deno.readTextFile(`${dir}/metrics.csv`)).trimEnd()
        .split("\n");
      assert.equal(header, METRICS_CSV_COLUMNS.join(","));
      const lines = await metrics(dir);
      assert.deepEqual(
        rows.map((row) => row.split(",").slice(0, 3)),
        lines.map((m) => [m.step, m.epoch ?? "", m.loss ?? ""].map(String)),
      );
    }
    // Extending the finished run: the printed departures and its config.json say the new length.
    const longer = await train(["--resume", parts, "--steps", "5", "--no-pictures"]);
    assert.equal(longer.code, 0, longer.stderr + longer.stdout);
    assert.match(longer.stdout, /^ {2}- 5 steps \(preset small: 1250 steps;/m);
    const extended = JSON.parse(await Deno.readTextFile(`${parts}/config.json`));
    assert.equal(extended.steps, 5);
    assert.ok(extended.deviations.some((d: string) => d.startsWith("5 steps (")));
    assert.equal((await metrics(parts)).filter((m) => "loss" in m).length, 5);
    await Deno.remove(base, { recursive: true });
  },
});

Deno.test({
  name: "train task: Ctrl-C writes a checkpoint of the last step and exits 130",
  ...TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const r = await train([...TINY, "--steps", "500", "--out", dir], {
      metrics: `${dir}/metrics.jsonl`,
    });
    assert.equal(r.code, 130, r.stderr + r.stdout);
    const match = r.stdout.match(/SIGINT: checkpoint of step (\d+) written/);
    assert.ok(match, r.stdout);
    const { readCheckpoint } = await import("../models/checkpoint.ts");
    const { state } = await readCheckpoint(`${dir}/checkpoint.safetensors`);
    assert.equal(state.step, Number(match[1]));
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name:
    "train task: a NaN loss stops the run with a clear message and keeps the last good checkpoint",
  ...TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const r = await train([
      ...TINY,
      "--steps",
      "30",
      "--checkpoint-every",
      "1",
      "--debug-nan-at",
      "3",
      "--out",
      dir,
    ]);
    assert.equal(r.code, 3, r.stderr + r.stdout);
    assert.match(r.stderr, /training diverged at step 3: .*not finite/);
    assert.match(r.stderr, /The last good checkpoint \(step 2\) is kept in/);
    const { readCheckpoint } = await import("../models/checkpoint.ts");
    const { file, state } = await readCheckpoint(`${dir}/checkpoint.safetensors`);
    assert.equal(state.step, 2);
    for (const [name, t] of file.tensors) {
      if (t.dtype === "F32") {
        assert.ok((t.data as Float32Array).every(Number.isFinite), `${name} is finite`);
      }
    }
    await Deno.remove(dir, { recursive: true });
  },
});

const BAD_INPUTS: [string, string[], RegExp][] = [
  ["an unknown flag", ["--bogus", "1"], /Unknown option '--bogus'/],
  ["a bad number", ["--batch", "zero"], /--batch must be a positive integer/],
  ["an unknown loss", ["--loss", "cosine"], /--loss must be one of triplet, rank-k/],
  ["an unknown preset", ["--preset", "huge"], /unknown preset "huge"/],
  [
    "a missing dataset directory",
    ["--dataset", "cifar10", "--data", "/nonexistent/cifar"],
    /\/nonexistent\/cifar/,
  ],
  ["a folder dataset without --data", ["--dataset", "folder"], /needs --data DIR/],
  [
    "a window larger than the batch allows",
    ["--batch", "4", "--window", "2,10"],
    /needs 10 negatives/,
  ],
  [
    "a batch over the adapter's binding limit",
    [
      "--preset",
      "resnet50-imagenet",
      "--dataset",
      "fashion-mnist",
      "--batch",
      "100000",
      "--steps",
      "1",
    ],
    /largest batch that fits is \d+: use --batch \d+ --accum \d+/,
  ],
  ["a negative step count", ["--steps", "-5"], /--steps must be a non-negative integer, got "-5"/],
  ["a zero --stop-after", ["--stop-after", "0"], /--stop-after must be a positive integer/],
  ["an unknown kernel plan", ["--kernel-plan", "tpu"], /--kernel-plan must be one of auto, gpu/],
  ["an unknown flag", ["--learning-rate", "1"], /Unknown option '--learning-rate'.*see --help/],
  [
    "a missing --config file",
    ["--config", "/nonexistent/config.json"],
    /--config \/nonexistent\/config.json: no such file/,
  ],
  [
    "a --config file that is not JSON",
    ["--config", `${ROOT}README.md`],
    /--config .*README.md is not valid JSON/,
  ],
  [
    "--config with --resume",
    ["--resume", "/tmp", "--config", "x.json"],
    /--config would not apply/,
  ],
];

for (const [what, args, message] of BAD_INPUTS) {
  Deno.test({
    name: `train task: ${what} gives one clear message, exit 2 and writes nothing`,
    ...TEST,
    fn: async () => {
      const out = `${await Deno.makeTempDir()}/run`;
      const r = await train(args.includes("--resume") ? args : [...args, "--out", out]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
      assert.equal(await exists(out), false, "nothing written before the input was checked");
    },
  });
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

Deno.test({
  name: "train task: an earlier run is safe: a non-empty --out is refused, --resume refuses " +
    "flags it would ignore, --overwrite replaces",
  ...TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const earlier = { "config.json": '{"earlier": true}\n', "metrics.jsonl": '{"step":1}\n' };
    for (const [name, text] of Object.entries(earlier)) {
      await Deno.writeTextFile(`${dir}/${name}`, text);
    }
    const refused = await train([...TINY, "--steps", "1", "--out", dir]);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(
      refused.stderr,
      /--out .* is not empty \(config.json, metrics.jsonl\): continue that run with --resume .*, replace it with --overwrite, or choose another --out/,
    );
    const ignored = await train(["--resume", dir, "--lr", "1", "--batch", "8"]);
    assert.equal(ignored.code, 2, ignored.stderr);
    assert.match(
      ignored.stderr,
      /--lr, --batch would not apply; with --resume only --steps, --epochs/,
    );
    for (const [name, text] of Object.entries(earlier)) {
      assert.equal(await Deno.readTextFile(`${dir}/${name}`), text, `${name} intact`);
    }
    const replaced = await train([...TINY, "--steps", "1", "--out", dir, "--overwrite"]);
    assert.equal(replaced.code, 0, replaced.stderr);
    const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    assert.equal(config.steps, 1);
    assert.equal((await metrics(dir)).filter((m) => m.loss !== undefined).length, 1);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "train task: resnet50-imagenet preset trains 2 steps at batch 2 on a tiny image folder " +
    "and evaluates with the kNN bank in several blocks",
  ...TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    for (const [c, cls] of ["cat", "dog", "fox"].entries()) {
      await Deno.mkdir(`${dir}/data/${cls}`, { recursive: true });
      for (let i = 0; i < 12; i++) {
        const data = new Uint8Array(40 * 40 * 3).map((_, j) => (j * (i + 3) + 90 * c) % 256);
        await Deno.writeFile(
          `${dir}/data/${cls}/${i}.png`,
          encodePng({ width: 40, height: 40, data, channels: 3 }),
        );
      }
    }
    const r = await train([
      "--preset",
      "resnet50-imagenet",
      "--dataset",
      "folder",
      "--data",
      `${dir}/data`,
      "--steps",
      "2",
      "--batch",
      "2",
      "--accum",
      "1",
      "--image-size",
      "32",
      "--eval-block-rows",
      "4",
      "--out",
      `${dir}/run`,
    ]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /window \[2,10\] shrunk to \[1,1\]/);
    const summary = JSON.parse(await Deno.readTextFile(`${dir}/run/summary.json`));
    assert.equal(summary.steps, 2);
    // Evaluated: kNN over a bank split into blocks of 4 rows, and the linear probe.
    assert.ok(summary.knnTop1 >= 0 && summary.knnTop1 <= 1, `kNN ${summary.knnTop1}`);
    assert.ok(summary.linearTop1 >= 0 && summary.linearTop1 <= 1, `probe ${summary.linearTop1}`);
    const config = JSON.parse(await Deno.readTextFile(`${dir}/run/config.json`));
    assert.equal(config.knnBlockRows, 4);
    assert.equal(config.headInit, "released");
    await Deno.remove(dir, { recursive: true });
  },
});

/** A PNG of 40x40 pixels whose pattern depends on (seed, class). */
function patternPng(seed: number, cls = 0): Uint8Array {
  const data = new Uint8Array(40 * 40 * 3).map((_, j) => (j * (seed + 3) + 90 * cls) % 256);
  return encodePng({ width: 40, height: 40, data, channels: 3 });
}

/** Write `count` PNGs named 0.png ... into dir (created). */
async function writePngs(dir: string, count: number, cls = 0): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  for (let i = 0; i < count; i++) await Deno.writeFile(`${dir}/${i}.png`, patternPng(i, cls));
}

Deno.test({
  name: "train task: folder-96 trains 2 steps on a flat folder of unlabelled images: evaluation " +
    "off, pictures without class marks, the CPU-adapter warning, skipped files named; it exports " +
    "and PyTorch loads the export strictly",
  ...TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    await writePngs(`${dir}/photos`, 24);
    await Deno.writeTextFile(`${dir}/photos/notes.txt`, "not an image");
    const r = await train([
      "--preset",
      "folder-96",
      "--data",
      `${dir}/photos`,
      "--steps",
      "2",
      "--batch",
      "4",
      "--out",
      `${dir}/run`,
    ]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /data folder: \d+ train \/ \d+ test images, unlabelled, 96px/);
    assert.match(r.stdout, /skipped 1 file that is not JPEG\/PNG \(\.txt x1\): .*notes\.txt/);
    assert.match(
      r.stdout,
      /evaluation: none \(the training images are unlabelled; pass --eval-data/,
    );
    assert.match(r.stdout, /WARNING: preset folder-96 .*\n.*FALLBACK CPU adapter/);
    assert.match(r.stdout, /no confusion matrix or per-class accuracy: the images are unlabelled/);
    assert.match(r.stdout, /done: not evaluated after 2 steps/);
    const summary = JSON.parse(await Deno.readTextFile(`${dir}/run/summary.json`));
    assert.equal(summary.steps, 2);
    assert.equal(summary.knnTop1, null);
    assert.match(summary.evaluation, /^not evaluated: the training images are unlabelled/);
    assert.equal(summary.unlabelled, true);
    assert.equal(summary.confusion, undefined);
    assert.deepEqual(Object.keys(summary.pictures).sort(), ["map", "retrieval"]);
    assert.ok(summary.retrieval.length >= 1, "retrieval rows");
    assert.deepEqual(Object.keys(summary.retrieval[0]), ["query", "neighbours"], "no labels");
    for (const path of Object.values(summary.pictures) as string[]) {
      assert.ok((await Deno.stat(path)).size > 0, path);
    }
    const metricLines = await metrics(`${dir}/run`);
    assert.equal(metricLines.filter((m) => m.knnTop1 !== undefined).length, 0, "no kNN lines");
    const config = JSON.parse(await Deno.readTextFile(`${dir}/run/config.json`));
    assert.deepEqual([config.preset, config.imageSize, config.widths], ["folder-96", 96, [
      64,
      128,
      256,
      512,
    ]]);
    // The run exports, and the generated module builds the backbone and loads it strictly.
    const exported = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "tasks/export.ts", "--checkpoint", `${dir}/run/checkpoint.safetensors`],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    assert.equal(exported.code, 0, decoder.decode(exported.stderr));
    assert.ok(
      (await Deno.stat(`${dir}/run/backbone.safetensors`)).size > 40e6,
      "ResNet-18 weights",
    );
    if (await pythonHasTorch()) {
      const loaded = await new Deno.Command(PYTHON, {
        args: [`${dir}/run/backbone.py`],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(loaded.code, 0, decoder.decode(loaded.stderr));
      assert.match(
        decoder.decode(loaded.stdout),
        /loaded .*backbone\.safetensors strictly; features \(2, 512\)/,
      );
    } else console.log(`SKIPPED loading the export in PyTorch: ${PYTHON} cannot import torch`);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "train task: unlabelled training images evaluated on a labelled --eval-data folder",
  ...TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    await writePngs(`${dir}/photos/2024`, 10);
    await writePngs(`${dir}/photos/2025/trip`, 10, 1);
    for (const [c, cls] of ["cat", "dog"].entries()) {
      await writePngs(`${dir}/labelled/${cls}`, 12, c);
    }
    const r = await train([
      ...TINY,
      "--dataset",
      "folder",
      "--data",
      `${dir}/photos`,
      "--labels",
      "none",
      "--eval-data",
      `${dir}/labelled`,
      "--image-size",
      "16",
      "--batch",
      "4",
      "--steps",
      "2",
      "--out",
      `${dir}/run`,
    ]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /unlabelled, 16px/);
    assert.match(
      r.stdout,
      /evaluation: kNN on --eval-data .*labelled \(2 classes: kNN bank of its \d+ train images/,
    );
    assert.doesNotMatch(r.stdout, /WARNING/);
    const summary = JSON.parse(await Deno.readTextFile(`${dir}/run/summary.json`));
    assert.ok(summary.knnTop1 >= 0 && summary.knnTop1 <= 1, `kNN ${summary.knnTop1}`);
    assert.equal(summary.evaluation, undefined);
    assert.equal(summary.confusion.length, 2);
    assert.ok((await Deno.stat(summary.pictures.confusion)).size > 0);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "train task: bad image folders give one clear message, exit 2 and write nothing",
  ...TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    await Deno.mkdir(`${dir}/empty`);
    await Deno.mkdir(`${dir}/heic`);
    for (const name of ["a.heic", "b.heic", "c.tiff"]) {
      await Deno.writeFile(`${dir}/heic/${name}`, new Uint8Array(8));
    }
    await writePngs(`${dir}/mixed`, 3);
    await writePngs(`${dir}/mixed/cats`, 3);
    await writePngs(`${dir}/flat`, 24);
    await writePngs(`${dir}/eval/train/cat`, 3);
    await writePngs(`${dir}/eval/train/dog`, 3, 1);
    await writePngs(`${dir}/eval/val/cow`, 2);
    const cases: [string[], RegExp][] = [
      [
        ["--data", `${dir}/empty`],
        /empty: no JPEG\/PNG images in the train split: .*no image files/,
      ],
      [
        ["--data", `${dir}/heic`],
        /skipped 3 files that are not JPEG\/PNG \(\.heic x2, \.tiff x1\): a\.heic, b\.heic, c\.tiff; convert/,
      ],
      [
        ["--data", `${dir}/mixed`],
        /mixed layout: 3 images lie directly in the folder .*--labels none/,
      ],
      [
        ["--data", `${dir}/flat`, "--eval-data", `${dir}/eval`],
        /--eval-data: .*eval\/val\/cow: class folder missing from the train split/,
      ],
      [
        ["--data", `${dir}/flat`, "--eval-data", `${dir}/flat`],
        /--eval-data: .*flat: --labels folders needs at least two class sub-folders/,
      ],
    ];
    for (const [args, message] of cases) {
      const out = `${dir}/run`;
      const r = await train([...TINY, "--dataset", "folder", ...args, "--out", out]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
      assert.equal(await exists(out), false, "nothing written before the input was checked");
    }
    await Deno.remove(dir, { recursive: true });
  },
});
