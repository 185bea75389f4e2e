/**
 * `deno task preview [--dataset fashion-mnist] [--data DIR] [--out preview.png] [--n 8]
 * [--seed 0] [--size S] [--image-size N] [--step K]`: a PNG grid of n training images (top row)
 * and their two augmented views (view 1, view 2) as training would see them at step K. For an
 * image folder the top row is the evaluation transform (resize, centre crop to N).
 */
import { encode as encodePng } from "fast-png";
import { acquireGpu } from "../runtime/gpu.ts";
import {
  DATASET_NAMES,
  DatasetError,
  LABEL_MODES,
  loadDataset,
  shuffledOrder,
} from "../data/dataset.ts";
import { Augmenter } from "../data/augment.ts";
import { augmentConfigFor } from "../data/augment_config.ts";
import { composeGrid } from "../data/grid.ts";
import { cropViewSpec } from "../data/folder_decode.ts";
import {
  existingDirectory,
  flagHelp,
  type FlagRow,
  nonNegativeInt,
  oneOf,
  parseFlagTable,
  positiveInt,
  runMain,
  UserError,
  writableFile,
} from "./cli.ts";

/** Every flag of `deno task preview`, in --help order. */
export const PREVIEW_FLAGS: FlagRow[] = [
  { name: "dataset", value: "NAME", help: `${DATASET_NAMES.join(" | ")} (default fashion-mnist)` },
  { name: "data", value: "DIR", help: "dataset directory (default: the dataset's)" },
  { name: "out", value: "FILE", help: "the PNG to write (default preview.png)" },
  { name: "n", value: "N", help: "images, one column each (default 8)" },
  { name: "seed", value: "N", help: "augmentation seed (default 0)" },
  { name: "step", value: "K", help: "training step whose views are shown (default 0)" },
  { name: "size", value: "S", help: "view size (default: the image size, at most 224)" },
  { name: "image-size", value: "N", help: "folder datasets: stored image size (default 256)" },
  {
    name: "labels",
    value: "MODE",
    help: "folder datasets: auto | folders | none, as for train (a mixed layout needs none)",
  },
  { name: "help", help: "this text" },
];

const USAGE = flagHelp(
  "deno task preview [flags]",
  "A PNG grid of training images (top row) and their two augmented views at a training step.",
  PREVIEW_FLAGS,
);

async function main(): Promise<number> {
  const parsed = parseFlagTable(PREVIEW_FLAGS, Deno.args);
  const values: Record<string, string | undefined> & { dataset: string; out: string } = {
    ...parsed as Record<string, string | undefined>,
    dataset: (parsed.dataset as string | undefined) ?? "fashion-mnist",
    out: (parsed.out as string | undefined) ?? "preview.png",
  };
  if (parsed.help) {
    console.log(USAGE);
    return 0;
  }
  const count = positiveInt("n", values.n) ?? 8;
  const seed = nonNegativeInt("seed", values.seed) ?? 0;
  const step = nonNegativeInt("step", values.step) ?? 0;
  const name = oneOf("dataset", values.dataset, DATASET_NAMES)!;
  const imageSize = positiveInt("image-size", values["image-size"]) ?? 256;
  const labels = oneOf("labels", values.labels, LABEL_MODES);
  if (labels !== undefined && name !== "folder") {
    throw new UserError(`--labels applies to --dataset folder only, not ${name}`);
  }
  const requestedSize = positiveInt("size", values.size);
  await writableFile("out", values.out);
  if (values.data !== undefined) await existingDirectory("data", values.data);
  if (name === "folder" && values.data === undefined) {
    throw new UserError("--dataset folder needs --data DIR (a folder of images)");
  }
  const dataset = await loadDataset(name, { dir: values.data, split: "train", imageSize, labels })
    .catch(
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
