/**
 * What the folder dataset's decode workers do (and the calling thread, when workers are off):
 * read and decode image files, then either the evaluation transform (resize the shorter side,
 * centre crop) or the two training views' random resized crops, each cut from the image at its
 * own full resolution with the box sampled against its own size (torchvision semantics).
 */
import type { Interpolation, ViewConfig } from "./augment_config.ts";
import { sampleCropAndFlip } from "./augment_params.ts";
import { readImageFile, resizeCentreCrop, resizedCrop } from "./image.ts";

/** The parts of a view's config the crop needs (plain data: it travels to the workers). */
export interface CropViewSpec {
  crop: { scale: [number, number]; ratio: [number, number]; interpolation: Interpolation };
  flipP: number;
}

/** The crop settings of a view config. */
export function cropViewSpec(view: ViewConfig): CropViewSpec {
  return {
    crop: {
      scale: [...view.crop.scale],
      ratio: [...view.crop.ratio],
      interpolation: view.crop.interpolation,
    },
    flipP: view.flipP,
  };
}

/** One decode job: some files of a batch, and what to make of them. */
export type DecodeTask =
  | {
    kind: "eval";
    paths: string[];
    /** Side of the square output. */
    size: number;
    /** The shorter side before the centre crop. */
    resize: number;
  }
  | {
    kind: "crops";
    paths: string[];
    /** Side of the square crops. */
    size: number;
    /** Batch position of `paths[0]` (the sample index of the augmentation streams). */
    firstSample: number;
    seed: number;
    step: number;
    views: [CropViewSpec, CropViewSpec];
  };

/**
 * Run a task. "eval": `paths.length` images of size x size x 3, back to back. "crops": the
 * view-1 crops of every path, then the view-2 crops (2 x `paths.length` images).
 */
export async function runDecodeTask(task: DecodeTask): Promise<Uint8Array<ArrayBuffer>> {
  const { paths, size } = task;
  const imageBytes = size * size * 3;
  if (task.kind === "eval") {
    const out = new Uint8Array(paths.length * imageBytes);
    for (let i = 0; i < paths.length; i++) {
      out.set(resizeCentreCrop(await readImageFile(paths[i]), task.resize, size), i * imageBytes);
    }
    return out;
  }
  const out = new Uint8Array(2 * paths.length * imageBytes);
  for (let i = 0; i < paths.length; i++) {
    const image = await readImageFile(paths[i]);
    for (const v of [0, 1] as const) {
      const view = task.views[v];
      const { crop, flip } = sampleCropAndFlip(
        view,
        image.height,
        image.width,
        task.seed,
        task.step,
        task.firstSample + i,
        v,
      );
      const pixels = resizedCrop(image, crop, size, view.crop.interpolation, flip);
      out.set(pixels, (v * paths.length + i) * imageBytes);
    }
  }
  return out;
}
