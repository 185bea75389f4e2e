/**
 * `deno task preview [--dataset fashion-mnist] [--data DIR] [--out preview.png] [--n 8]
 * [--seed 0] [--size S] [--image-size N] [--step K]`: a PNG grid of n training images (top row)
 * and their two augmented views (view 1, view 2) as training would see them at step K. For an
 * image folder the top row is the evaluation transform (resize, centre crop to N).
 */
import { parseArgs } from "node:util";
import { encode as encodePng } from "fast-png";
import { acquireGpu } from "../runtime/gpu.ts";
import { DATASET_NAMES, DatasetError, loadDataset, shuffledOrder } from "../data/dataset.ts";
import { Augmenter } from "../data/augment.ts";
import { augmentConfigFor } from "../data/augment_config.ts";
import { composeGrid } from "../data/grid.ts";
import { cropViewSpec } from "../data/folder_decode.ts";
import { nonNegativeInt, oneOf, positiveInt, runMain, UserError } from "./cli.ts";

const USAGE = `usage: deno task preview [flags]
  --dataset NAME      ${DATASET_NAMES.join("|")} (default fashion-mnist)
  --data DIR          dataset directory
  --out FILE          the PNG to write (default preview.png)
  --n N               images, one column each (default 8)
  --seed N            augmentation seed (default 0)
  --step K            training step whose views are shown (default 0)
  --size S            view size (default: the image size, at most 224)
  --image-size N      folder datasets: stored image size (default 256)`;

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
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
        help: { type: "boolean", default: false, short: "h" },
      },
    });
  } catch (e) {
    throw new UserError(`${(e as Error).message}\n${USAGE}`);
  }
  const values = parsed.values;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const count = positiveInt("n", values.n) ?? 8;
  const seed = nonNegativeInt("seed", values.seed) ?? 0;
  const step = nonNegativeInt("step", values.step) ?? 0;
  const name = oneOf("dataset", values.dataset, DATASET_NAMES)!;
  const imageSize = positiveInt("image-size", values["image-size"]) ?? 256;
  const requestedSize = positiveInt("size", values.size);
  const dataset = await loadDataset(name, { dir: values.data, split: "train", imageSize }).catch(
    (e) => {
      throw e instanceof DatasetError ? new UserError(e.message) : e;
    },
  );
  try {
    const size = requestedSize ?? Math.min(dataset.height, 224);
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
  return 0;
}

if (import.meta.main) runMain("preview", main);
