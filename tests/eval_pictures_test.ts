/**
 * `deno task eval` end to end on a tiny labelled image folder (3 classes of flat-coloured 8x8
 * PNGs): the JSON gains per-class kNN accuracy and a confusion matrix consistent with the kNN
 * top-1, and the three pictures are written with the sizes their layout implies.
 */
import assert from "node:assert/strict";
import { decode as decodePng, encode as encodePng } from "fast-png";
import { gpuTest, testGpu, tinySslModel } from "./util.ts";
import { saveCheckpoint } from "../models/checkpoint.ts";
import { PRESETS } from "../tasks/presets.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const COLOURS = [[220, 30, 30], [30, 200, 40], [40, 60, 230]];

async function writeFolder(dir: string, split: string, perClass: number): Promise<void> {
  for (const [c, colour] of COLOURS.entries()) {
    await Deno.mkdir(`${dir}/${split}/class${c}`, { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const data = new Uint8Array(8 * 8 * 3);
      for (let p = 0; p < 64; p++) {
        // A per-image brightness change so images differ within a class.
        for (let ch = 0; ch < 3; ch++) data[p * 3 + ch] = Math.min(255, colour[ch] + 4 * i);
      }
      const png = encodePng({ width: 8, height: 8, channels: 3, depth: 8, data });
      await Deno.writeFile(`${dir}/${split}/class${c}/${i}.png`, png);
    }
  }
}

Deno.test({
  name: "eval pictures: tiny 3-class folder -> per-class accuracy, confusion matrix, three PNGs",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    await writeFolder(`${dir}/data`, "train", 12);
    await writeFolder(`${dir}/data`, "val", 4);
    const gpu = await testGpu();
    const model = tinySslModel(gpu, 3);
    const checkpoint = `${dir}/checkpoint.safetensors`;
    await saveCheckpoint(checkpoint, model, {
      step: 0,
      trainConfig: { ...PRESETS.small, dataset: "folder", data: `${dir}/data`, imageSize: 8 },
    });
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "tasks/eval.ts",
        "--checkpoint",
        checkpoint,
        "--knn-k",
        "3",
        "--bank",
        "0",
        "--test",
        "0",
        "--probe-epochs",
        "0",
        "--map-points",
        "12",
      ],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const output = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
    assert.equal(code, 0, output);
    const report = JSON.parse(await Deno.readTextFile(`${dir}/checkpoint.eval.json`));
    const confusion: number[][] = report.confusion;
    assert.equal(confusion.length, 3);
    assert.deepEqual(confusion.map((row) => row.reduce((a, b) => a + b, 0)), [4, 4, 4]);
    const diagonal = confusion.reduce((s, row, c) => s + row[c], 0);
    assert.equal(diagonal / 12, report.knnTop1, "the confusion matrix agrees with kNN top-1");
    assert.deepEqual(report.perClassKnnTop1, confusion.map((row, c) => row[c] / 4));
    assert.equal(report.retrieval.length, 3, "one query per class");
    for (const [c, row] of report.retrieval.entries()) {
      assert.equal(row.label, c);
      assert.equal(row.neighbours.length, 8);
    }

    const picture = async (name: string) =>
      decodePng(await Deno.readFile(`${dir}/checkpoint.eval.${name}.png`));
    const retrieval = await picture("retrieval");
    // 8x8 images zoomed 12x in 3-pixel frames: cells 102 px; 9 per row, 3 rows, 4 px gaps.
    assert.equal(retrieval.height, 4 + 3 * (102 + 4));
    assert.equal(retrieval.width, 4 + 9 * (102 + 4) + 8);
    const map = await picture("map");
    assert.equal(map.height, 640);
    const confusionPicture = await picture("confusion");
    assert.equal(confusionPicture.width, 10 + 22 + 3 * 30 + 4);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "eval pictures: a run on unlabelled images is evaluated on its --eval-data folder; " +
    "unlabelled data alone is refused with exit 2",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    await writeFolder(`${dir}/labelled`, "train", 6);
    await writeFolder(`${dir}/labelled`, "val", 2);
    // Unlabelled: the 18 training images, flat, as 0.png ... 17.png ...
    await Deno.mkdir(`${dir}/photos`);
    const classFiles = [0, 1, 2].flatMap((c) =>
      [...Deno.readDirSync(`${dir}/labelled/train/class${c}`)].map((e) =>
        `${dir}/labelled/train/class${c}/${e.name}`
      )
    );
    for (const [i, file] of classFiles.entries()) {
      await Deno.copyFile(file, `${dir}/photos/${i}.png`);
    }
    // ... and 18.png, which the hash holds out: the test split is not empty.
    await Deno.copyFile(classFiles[0], `${dir}/photos/18.png`);
    const gpu = await testGpu();
    const model = tinySslModel(gpu, 3);
    const run = {
      ...PRESETS.small,
      dataset: "folder" as const,
      data: `${dir}/photos`,
      imageSize: 8,
    };
    const evalTask = async (name: string, trainConfig: typeof run) => {
      const checkpoint = `${dir}/${name}.safetensors`;
      await saveCheckpoint(checkpoint, model, { step: 0, trainConfig });
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "tasks/eval.ts", "--checkpoint", checkpoint, "--knn-k", "3"].concat(
          ["--probe-epochs", "0", "--map-points", "6"],
        ),
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output();
      return { code: out.code, stderr: new TextDecoder().decode(out.stderr), checkpoint };
    };
    const refused = await evalTask("unlabelled", run);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(
      refused.stderr,
      /photos is unlabelled: kNN and probe accuracy need labels; pass --data/,
    );
    const withEvalData = await evalTask("eval-data", { ...run, evalData: `${dir}/labelled` });
    assert.equal(withEvalData.code, 0, withEvalData.stderr);
    const report = JSON.parse(await Deno.readTextFile(`${dir}/eval-data.eval.json`));
    assert.equal(report.confusion.length, 3, "the labelled folder's 3 classes");
    assert.deepEqual(report.confusion.map((row: number[]) => row.reduce((a, b) => a + b, 0)), [
      2,
      2,
      2,
    ]);
    // embed on the unlabelled images: features, the file of each row, no labels file (a labels
    // file an earlier embedding left under that name is removed: its rows were other images).
    await Deno.writeTextFile(`${dir}/features.labels.npy`, "stale");
    const embedded = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "tasks/embed.ts", "--checkpoint", refused.checkpoint, "--out"].concat(
        [`${dir}/features.npy`, "--split", "train"],
      ),
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(embedded.code, 0, new TextDecoder().decode(embedded.stderr));
    assert.match(
      new TextDecoder().decode(embedded.stdout),
      /no labels file: the images are unlabelled; removed .*features\.labels\.npy of an earlier embedding/,
    );
    const files = (await Deno.readTextFile(`${dir}/features.files.txt`)).trim().split("\n");
    assert.ok(files.length >= 1 && files.every((f) => f.startsWith(`${dir}/photos/`)), `${files}`);
    const header = new Uint8Array(await Deno.readFile(`${dir}/features.npy`)).subarray(0, 128);
    assert.match(new TextDecoder().decode(header), new RegExp(`'shape': \\(${files.length}, 8\\)`));
    assert.equal(
      await Deno.stat(`${dir}/features.labels.npy`).then(() => true, () => false),
      false,
    );
    await Deno.remove(dir, { recursive: true });
  },
});
