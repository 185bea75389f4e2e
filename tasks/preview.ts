/**
 * `deno task preview [--dataset fashion-mnist] [--data DIR] [--out preview.png] [--n 8]
 * [--seed 0] [--size S] [--image-size N] [--step K]`: a PNG grid of n training images (top row)
 * and their two augmented views (view 1, view 2) as training would see them at step K. For an
 * image folder the top row is the evaluation transform (resize, centre crop to N).
 */
import { parseArgs } from "node:util";
import { encode as encodePng } from "fast-png";
import { acquireGpu } from "../runtime/gpu.ts";
import { type DatasetName, loadDataset, shuffledOrder } from "../data/dataset.ts";
import { Augmenter } from "../data/augment.ts";
import { augmentConfigFor } from "../data/augment_config.ts";
import { composeGrid } from "../data/grid.ts";
import { cropViewSpec } from "../data/folder_decode.ts";

const USAGE = "usage: deno task preview [--dataset fashion-mnist|mnist|cifar10|cifar100|folder] " +
  "[--data DIR] [--out preview.png] [--n 8] [--seed 0] [--step 0] [--size S] [--image-size N]";

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    throw new Error(`--${name} must be a non-negative integer, not ${value}`);
  }
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      dataset: { type: "string", default: "fashion-mnist" },
      data: { type: "string" },
      out: { type: "string", default: "preview.png" },
      n: { type: "string" },
      seed: { type: "string" },
      step: { type: "string" },
      size: { type: "string" },
      "image-size": { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const count = Math.max(1, positiveInt("n", values.n, 8));
  const seed = positiveInt("seed", values.seed, 0);
  const step = positiveInt("step", values.step, 0);
  const name = values.dataset as DatasetName;
  const dataset = await loadDataset(name, {
    dir: values.data,
    split: "train",
    imageSize: positiveInt("image-size", values["image-size"], 256),
  });
  try {
    const size = positiveInt("size", values.size, Math.min(dataset.height, 224));
    const gpu = await acquireGpu({ log: true });
    const augmenter = new Augmenter(gpu, augmentConfigFor(size), dataset, size);
    const indices = shuffledOrder(dataset.length, seed, 0).subarray(
      0,
      Math.min(count, dataset.length),
    );
    const { pixels } = await dataset.batch(indices);
    const images = augmenter.uploadBatch(pixels, indices.length);
    // Image folders cut the training crops on the CPU, from each image at its own resolution.
    const [first, second] = augmenter.config.views;
    const { view1, view2 } = dataset.randomResizedCrops
      ? augmenter.viewsFromCrops(
        (await dataset.randomResizedCrops(indices, {
          seed,
          step,
          size,
          views: [cropViewSpec(first), cropViewSpec(second)],
        })).views,
        indices.length,
        seed,
        step,
      )
      : augmenter.views(images, seed, step);
    const [v1, v2] = await gpu.read([view1, view2]);
    const shape = { channels: dataset.channels, mean: dataset.mean, std: dataset.std };
    const grid = composeGrid(
      [
        { height: dataset.height, width: dataset.width, ...shape, pixels },
        { height: size, width: size, ...shape, pixels: v1 as Float32Array },
        { height: size, width: size, ...shape, pixels: v2 as Float32Array },
      ],
      indices.length,
      Math.max(1, Math.floor(96 / Math.max(size, dataset.height))),
    );
    await Deno.writeFile(values.out, encodePng({ ...grid, depth: 8 }));
    console.log(
      `${values.out}: ${indices.length} ${dataset.name} images (top), view 1 and view 2 at ` +
        `${size}x${size}, seed ${seed}, step ${step}`,
    );
    for (const t of [images, view1, view2]) t.release();
  } finally {
    dataset.close?.();
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`preview: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
