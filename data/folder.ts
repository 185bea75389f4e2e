/**
 * ImageFolder: one sub-folder per class (classes sorted by name) of JPEG/PNG files (`.jpg`,
 * `.jpeg`, `.png`, any case; other files are ignored). Images are decoded per batch in Web Workers
 * (`decode_worker.ts`) so training does not wait; nothing is stored resized.
 * - `batch()` gives the evaluation transform, torchvision's Resize(R) + CenterCrop(imageSize) with
 *   R = round(imageSize * 256 / 224) (256 for 224 px; antialiased bilinear), for both splits.
 * - `randomResizedCrops()` gives the two training views' crops, each box sampled against the
 *   image's own full decoded size (scale of the whole image's area, torchvision's 10 tries and
 *   fallback) and resampled to imageSize on the CPU; the GPU applies the rest of the views.
 *
 * Split:
 * - If `dir/train` exists with `dir/val` (or `dir/test`), those are the train and test splits
 *   (the ImageNet layout); the classes are the train sub-folders, and a test class must be one of
 *   them.
 * - Otherwise every file of `dir/<class>/` belongs to one split by a seeded hash of its relative
 *   path: a fixed 10% ({@link HOLDOUT_FRACTION}) is held out as "test". The hash depends only on
 *   the path, so adding files never moves existing ones between the splits.
 */
import type { CropRequest, Dataset } from "./dataset.ts";
import { checkIndices, DatasetError, isDirectory, joinPath } from "./common.ts";
import { evalResizeSize } from "./image.ts";
import { philox4x32 } from "./random.ts";
import type { DecodeReply, DecodeRequest } from "./decode_worker.ts";
import { type DecodeTask, runDecodeTask } from "./folder_decode.ts";

/** Fraction of a single-folder dataset held out as the test split. */
export const HOLDOUT_FRACTION = 0.1;
const HOLDOUT_KEY = [0x7472_6970, 0x686f_6c64]; // fixed: the split must not depend on --seed
const IMAGENET_MEAN = [0.485, 0.456, 0.406];
const IMAGENET_STD = [0.229, 0.224, 0.225];
const IMAGE_EXTENSIONS = /\.(jpe?g|png)$/i;

/** Options of {@link loadImageFolder}. */
export interface FolderOptions {
  /** Decode workers (0 decodes on the calling thread). Default: CPU cores - 1, 1 to 4. */
  workers?: number;
  /** Milliseconds without work after which the workers are stopped (restarted on demand). */
  idleMs?: number;
  /**
   * Shorter side of the evaluation resize before the centre crop of `imageSize` (default
   * round(imageSize * 256 / 224)); must be >= imageSize.
   */
  resize?: number;
}

/** One image file and its class. */
interface Entry {
  path: string;
  /** `<class>/<file>`, what the hold-out hash sees. */
  relative: string;
  label: number;
}

/** Load a split of an image-folder dataset (see the module comment for the layout). */
export function loadImageFolder(
  dir: string,
  split: "train" | "test",
  imageSize: number,
  options: FolderOptions = {},
): Promise<Dataset> {
  if (!Number.isInteger(imageSize) || imageSize < 1) {
    throw new Error(`folder dataset: image size must be a positive integer, not ${imageSize}`);
  }
  const resize = options.resize ?? evalResizeSize(imageSize);
  if (!Number.isInteger(resize) || resize < imageSize) {
    throw new Error(
      `folder dataset: the evaluation resize (${resize}) must be an integer >= the image size ` +
        `(${imageSize})`,
    );
  }
  if (!isDirectory(dir)) {
    throw new DatasetError(
      dir,
      "image folder not found: pass --data DIR with one sub-folder per class",
    );
  }
  const trainDir = joinPath(dir, "train");
  const testDir = ["val", "test"].map((s) => joinPath(dir, s)).find(isDirectory);
  let classes: string[];
  let entries: Entry[];
  if (isDirectory(trainDir) && testDir) {
    classes = classFolders(trainDir);
    entries = listImages(split === "train" ? trainDir : testDir, classes, split === "test");
  } else {
    classes = classFolders(dir);
    entries = listImages(dir, classes, false).filter((e) =>
      isHeldOut(e.relative) === (split === "test")
    );
  }
  if (entries.length === 0) {
    throw new DatasetError(dir, `no JPEG/PNG images in the ${split} split`);
  }
  return Promise.resolve(new ImageFolderDataset(dir, entries, classes.length, imageSize, options));
}

/** Sorted names of the class sub-folders of a directory. */
function classFolders(dir: string): string[] {
  const names: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    if (entry.isDirectory && !entry.name.startsWith(".")) names.push(entry.name);
  }
  if (names.length === 0) {
    throw new DatasetError(dir, "no class sub-folders: expected DIR/<class>/<image>.jpg|png");
  }
  return names.sort();
}

/** Image files under `dir/<class>/`, classes in the given order, files sorted by name. */
function listImages(dir: string, classes: string[], classesMayBeMissing: boolean): Entry[] {
  const entries: Entry[] = [];
  const known = new Set(classes);
  for (const entry of Deno.readDirSync(dir)) {
    if (entry.isDirectory && !entry.name.startsWith(".") && !known.has(entry.name)) {
      throw new DatasetError(
        joinPath(dir, entry.name),
        "class folder missing from the train split; every test class must have training images",
      );
    }
  }
  classes.forEach((name, label) => {
    const classDir = joinPath(dir, name);
    if (!isDirectory(classDir)) {
      if (classesMayBeMissing) return;
      throw new DatasetError(classDir, "class folder disappeared while listing");
    }
    const files: string[] = [];
    for (const f of Deno.readDirSync(classDir)) {
      if (f.isFile && IMAGE_EXTENSIONS.test(f.name)) files.push(f.name);
    }
    files.sort();
    for (const f of files) {
      entries.push({ path: joinPath(classDir, f), relative: `${name}/${f}`, label });
    }
  });
  return entries;
}

/** Whether a relative path falls in the held-out 10% (FNV-1a of the path, mixed by Philox). */
export function isHeldOut(relativePath: string): boolean {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(relativePath)) {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  const word = philox4x32([hash, 0, 0, 0], HOLDOUT_KEY)[0];
  return word / 4294967296 < HOLDOUT_FRACTION;
}

class ImageFolderDataset implements Dataset {
  readonly name: string;
  readonly length: number;
  readonly channels = 3;
  readonly height: number;
  readonly width: number;
  readonly mean = [...IMAGENET_MEAN];
  readonly std = [...IMAGENET_STD];
  private readonly pool: DecodePool | undefined;
  /** Shorter side of the evaluation resize. */
  readonly resize: number;

  constructor(
    dir: string,
    private readonly entries: Entry[],
    readonly classes: number,
    private readonly imageSize: number,
    options: FolderOptions,
  ) {
    this.name = `folder:${dir.replace(/\/+$/, "").split("/").pop()}`;
    this.length = entries.length;
    this.height = this.width = imageSize;
    this.resize = options.resize ?? evalResizeSize(imageSize);
    const cores = navigator.hardwareConcurrency ?? 2;
    const workers = options.workers ?? Math.min(4, Math.max(1, cores - 1));
    this.pool = workers > 0 ? new DecodePool(workers, options.idleMs ?? 5000) : undefined;
  }

  /** The evaluation transform (resize the shorter side, centre crop) of the given samples. */
  async batch(indices: ArrayLike<number>): Promise<{ pixels: Uint8Array; labels: Int32Array }> {
    checkIndices(this.name, indices, this.length);
    const size = this.imageSize;
    const labels = Int32Array.from(indices, (i) => this.entries[i].label);
    const parts = await this.decode(indices, (paths) => ({
      kind: "eval",
      paths,
      size,
      resize: this.resize,
    }));
    const imageBytes = size * size * 3;
    const pixels = new Uint8Array(indices.length * imageBytes);
    for (const { start, pixels: p } of parts) pixels.set(p, start * imageBytes);
    return { pixels, labels };
  }

  /** Both training views' random resized crops, cut from each image at its own resolution. */
  async randomResizedCrops(
    indices: ArrayLike<number>,
    request: CropRequest,
  ): Promise<{ views: [Uint8Array, Uint8Array]; labels: Int32Array }> {
    checkIndices(this.name, indices, this.length);
    const { size, seed, step, views } = request;
    if (!Number.isInteger(size) || size < 1) {
      throw new Error(`randomResizedCrops: crop size must be a positive integer, not ${size}`);
    }
    const labels = Int32Array.from(indices, (i) => this.entries[i].label);
    const parts = await this.decode(indices, (paths, start) => ({
      kind: "crops",
      paths,
      size,
      firstSample: start,
      seed,
      step,
      views,
    }));
    const imageBytes = size * size * 3;
    const out: [Uint8Array, Uint8Array] = [
      new Uint8Array(indices.length * imageBytes),
      new Uint8Array(indices.length * imageBytes),
    ];
    for (const { start, count, pixels } of parts) {
      // A part holds its view-1 crops, then its view-2 crops.
      out[0].set(pixels.subarray(0, count * imageBytes), start * imageBytes);
      out[1].set(pixels.subarray(count * imageBytes), start * imageBytes);
    }
    return { views: out, labels };
  }

  /**
   * Run a task over contiguous chunks of the samples, one chunk per worker in parallel (or all
   * on this thread without workers).
   */
  private async decode(
    indices: ArrayLike<number>,
    taskOf: (paths: string[], start: number) => DecodeTask,
  ): Promise<{ start: number; count: number; pixels: Uint8Array }[]> {
    const paths = Array.from(indices, (i) => this.entries[i].path);
    if (!this.pool) {
      return [{ start: 0, count: paths.length, pixels: await runDecodeTask(taskOf(paths, 0)) }];
    }
    const chunk = Math.ceil(paths.length / this.pool.size);
    const jobs: Promise<{ start: number; count: number; pixels: Uint8Array }>[] = [];
    for (let start = 0; start < paths.length; start += chunk) {
      const part = paths.slice(start, start + chunk);
      jobs.push(
        this.pool.run(taskOf(part, start)).then((pixels) => ({
          start,
          count: part.length,
          pixels,
        })),
      );
    }
    return await Promise.all(jobs);
  }

  close(): void {
    this.pool?.close();
  }
}

/** A few decode workers, started on demand and stopped after `idleMs` without work. */
class DecodePool {
  private workers: Worker[] = [];
  private pending = new Map<
    number,
    { resolve: (p: Uint8Array) => void; reject: (e: Error) => void }
  >();
  private nextId = 0;
  private nextWorker = 0;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(readonly size: number, private readonly idleMs: number) {}

  run(task: DecodeTask): Promise<Uint8Array> {
    this.cancelIdleTimer();
    if (this.workers.length === 0) this.start();
    const id = this.nextId++;
    const worker = this.workers[this.nextWorker++ % this.workers.length];
    return new Promise<Uint8Array>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, task } satisfies DecodeRequest);
    });
  }

  close(): void {
    this.cancelIdleTimer();
    for (const w of this.workers) w.terminate();
    this.workers = [];
    for (const { reject } of this.pending.values()) {
      reject(new Error("image folder dataset closed"));
    }
    this.pending.clear();
  }

  private start(): void {
    for (let i = 0; i < this.size; i++) {
      const worker = new Worker(new URL("./decode_worker.ts", import.meta.url), { type: "module" });
      worker.onmessage = (event: MessageEvent<DecodeReply>) => this.settle(event.data);
      worker.onerror = (event: ErrorEvent) => {
        event.preventDefault();
        const error = new Error(`image decode worker failed: ${event.message}`);
        for (const { reject } of this.pending.values()) reject(error);
        this.pending.clear();
        this.close();
      };
      this.workers.push(worker);
    }
  }

  private settle(reply: DecodeReply): void {
    const job = this.pending.get(reply.id);
    if (!job) return;
    this.pending.delete(reply.id);
    if (reply.error !== undefined || !reply.pixels) {
      job.reject(new Error(reply.error ?? "no pixels"));
    } else job.resolve(reply.pixels);
    if (this.pending.size === 0) this.startIdleTimer();
  }

  private startIdleTimer(): void {
    this.cancelIdleTimer();
    const timer = setTimeout(() => this.close(), this.idleMs);
    // The timer alone must not keep a finished program alive (the workers are stopped with it).
    Deno.unrefTimer(timer);
    this.idleTimer = timer;
  }

  private cancelIdleTimer(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }
}
