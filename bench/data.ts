/**
 * Data pipeline benchmark: the folder dataset's decode rate (JPEG read + decode + resize in the
 * worker pool) and the GPU augmentation throughput (two views per image) at 28x28x1 and
 * 224x224x3. No tfjs peer: tfjs has no equivalent per-sample augmentation pipeline.
 * Standalone: `deno run -A bench/data.ts [--quick]`.
 */
import jpeg from "jpeg-js";
import { acquireGpu } from "../runtime/gpu.ts";
import { type BenchContext, type BenchRow, timeAsync, timeGpu } from "./harness.ts";
import { loadImageFolder } from "../data/folder.ts";
import { Augmenter } from "../data/augment.ts";
import { imagenetViews, smallDataViews } from "../data/augment_config.ts";

/** Write `count` smooth-ish 256x256 JPEGs (gradients plus a shape, like photos compress). */
async function writeJpegFolder(dir: string, count: number): Promise<void> {
  const side = 256;
  for (let i = 0; i < count; i++) {
    const cls = `class${i % 4}`;
    await Deno.mkdir(`${dir}/${cls}`, { recursive: true });
    const data = new Uint8Array(side * side * 4);
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) {
        const o = 4 * (y * side + x);
        const inside = Math.hypot(x - 64 - 2 * i, y - 128) < 50;
        data[o] = inside ? 220 : x;
        data[o + 1] = inside ? 40 : y;
        data[o + 2] = (x * y + 37 * i) % 256;
        data[o + 3] = 255;
      }
    }
    await Deno.writeFile(
      `${dir}/${cls}/${i}.jpg`,
      jpeg.encode({ width: side, height: side, data }, 90).data,
    );
  }
}

/** Decode rate of the folder loader and augmentation throughput. */
export async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const { gpu, quick } = ctx;

  // Decode: all images of a generated folder, 256x256 JPEG -> 224x224 RGB.
  const imageCount = quick ? 16 : 64;
  const dir = await Deno.makeTempDir({ prefix: "tritrain-bench-data-" });
  try {
    await writeJpegFolder(dir, imageCount);
    const dataset = await loadImageFolder(dir, "train", 224);
    try {
      const indices = Array.from({ length: dataset.length }, (_, i) => i);
      // The warm-up call starts the workers (their start-up is not decode time).
      const ms = await timeAsync(async () => {
        await dataset.batch(indices);
      }, { warmup: 1, iterations: quick ? 1 : 3 });
      rows.push({
        part: "data",
        case: `folder decode ${dataset.length}x 256px JPEG -> 224`,
        ours: { ms, perSecond: dataset.length / (ms / 1000) },
        note: `images/s, ${navigator.hardwareConcurrency} cores`,
      });
    } finally {
      dataset.close?.();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }

  // Augmentation: upload excluded; two views per image, all ops on.
  const cases = [
    {
      label: "28x28x1",
      size: 28,
      channels: 1,
      batch: quick ? 64 : 256,
      config: smallDataViews(28),
    },
    { label: "224x224x3", size: 224, channels: 3, batch: quick ? 4 : 32, config: imagenetViews() },
  ];
  for (const c of cases) {
    const mean = Array(c.channels).fill(0.5);
    const std = Array(c.channels).fill(0.25);
    const input = { height: c.size, width: c.size, channels: c.channels, mean, std };
    const augmenter = new Augmenter(gpu, c.config, input, c.size);
    const pixels = new Uint8Array(c.batch * c.size * c.size * c.channels).map((_, i) =>
      (i * 7) % 256
    );
    const images = augmenter.uploadBatch(pixels, c.batch);
    let step = 0;
    const ms = await timeGpu(gpu, () => {
      const { view1, view2 } = augmenter.views(images, 0, step++);
      view1.release();
      view2.release();
    }, { warmup: 1, iterations: quick ? 2 : 5 });
    images.release();
    rows.push({
      part: "data",
      case: `augment ${c.label} batch ${c.batch}`,
      ours: { ms, perSecond: c.batch / (ms / 1000) },
      note: "images/s (two views each)",
    });
  }
  return rows;
}

if (import.meta.main) {
  const { formatTable } = await import("./harness.ts");
  const gpu = await acquireGpu({ log: true });
  const quick = Deno.args.includes("--quick");
  console.log(formatTable(await run({ gpu, quick, withTfjs: false, flags: {} })));
}
