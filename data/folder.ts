/**
 * ImageFolder: JPEG/PNG files (`.jpg`, `.jpeg`, `.png`, any case) anywhere below a folder,
 * labelled by their first-level sub-folder or unlabelled. Images are decoded per batch in Web
 * Workers (`decode_worker.ts`) so training does not wait; nothing is stored resized.
 * - `batch()` gives the evaluation transform, torchvision's Resize(R) + CenterCrop(imageSize) with
 *   R = round(imageSize * 256 / 224) (256 for 224 px; antialiased bilinear), for both splits.
 * - `randomResizedCrops()` gives the two training views' crops, each box sampled against the
 *   image's own full decoded size (scale of the whole image's area, torchvision's 10 tries and
 *   fallback) and resampled to imageSize on the CPU; the GPU applies the rest of the views.
 *
 * Labels ({@link LabelMode}):
 * - `folders`: every image sits below a first-level sub-folder, its class (classes sorted by
 *   name, at least two); images deeper in a class folder belong to that class.
 * - `none`: every image of the tree, one class (`labelled` is false): self-supervised training
 *   without evaluation labels.
 * - `auto` (the default): `folders` when no image lies directly in the folder and at least two
 *   sub-folders hold images; `none` when all images lie directly in it or in one sub-folder. A
 *   folder with images both directly in it and in sub-folders is refused as ambiguous.
 * Other files are skipped and named (`skippedFiles`); hidden files and folders are ignored.
 *
 * Split:
 * - If `dir/train` exists with `dir/val` (or `dir/test`), those are the train and test splits
 *   (the ImageNet layout); the label rule applies to the train folder, and a labelled test class
 *   must be one of the train classes.
 * - Otherwise every image belongs to one split by a seeded hash of its path relative to `dir`:
 *   a fixed 10% ({@link HOLDOUT_FRACTION}) is held out as "test". The hash depends only on the
 *   path, so adding files never moves existing ones between the splits.
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

/** How a folder's images get labels (see the module comment). */
export const LABEL_MODES = ["auto", "folders", "none"] as const;
export type LabelMode = typeof LABEL_MODES[number];

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
  /** Labels from class sub-folders, none, or decided by the layout (default "auto"). */
  labels?: LabelMode;
}

/** One image file and its class. */
interface Entry {
  path: string;
  /** Path below the dataset (or split) folder, what the hold-out hash sees. */
  relative: string;
  label: number;
}

/** Image files and other files below a folder, as sorted paths relative to it. */
interface FolderScan {
  images: string[];
  others: string[];
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
  const mode = options.labels ?? "auto";
  if (!(LABEL_MODES as readonly string[]).includes(mode)) {
    throw new Error(`folder dataset: labels must be one of ${LABEL_MODES.join(", ")}, not ${mode}`);
  }
  if (!isDirectory(dir)) {
    throw new DatasetError(
      dir,
      "image folder not found: pass --data DIR, a folder of images (any layout) or of one " +
        "sub-folder per class",
    );
  }
  const trainDir = joinPath(dir, "train");
  const testDir = ["val", "test"].map((s) => joinPath(dir, s)).find(isDirectory);
  const splitFolders = isDirectory(trainDir) && testDir !== undefined;
  const rootDir = splitFolders ? trainDir : dir;
  const rootScan = scanFolder(rootDir);
  const classes = classesOf(rootDir, rootScan, mode, split);
  let entries: Entry[];
  let skipped: string[];
  if (splitFolders) {
    const splitDir = split === "train" ? trainDir : testDir;
    const scan = split === "train" ? rootScan : scanFolder(splitDir);
    if (split === "test" && classes) checkTestClasses(splitDir, scan, classes);
    entries = entriesOf(splitDir, scan.images, classes);
    skipped = scan.others.map((f) => joinPath(splitDir, f));
  } else {
    entries = entriesOf(dir, rootScan.images, classes).filter((e) =>
      isHeldOut(e.relative) === (split === "test")
    );
    skipped = rootScan.others.map((f) => joinPath(dir, f));
  }
  if (entries.length === 0) {
    throw new DatasetError(
      dir,
      `no JPEG/PNG images in the ${split} split` +
        (splitFolders
          ? `: put images in ${split === "train" ? trainDir : testDir}`
          : ` (${rootScan.images.length} images in all; ${HOLDOUT_FRACTION * 100}% of them, ` +
            "chosen by a hash of the path, are held out as the test split): add images"),
    );
  }
  return Promise.resolve(
    new ImageFolderDataset(dir, entries, classes, imageSize, options, skipped),
  );
}

/** Every non-hidden file below `dir`, recursively (symbolic links to files count, not to folders). */
function scanFolder(dir: string): FolderScan {
  const images: string[] = [];
  const others: string[] = [];
  const walk = (relative: string) => {
    const here = relative ? joinPath(dir, relative) : dir;
    for (const entry of Deno.readDirSync(here)) {
      if (entry.name.startsWith(".")) continue;
      const path = relative ? `${relative}/${entry.name}` : entry.name;
      let isFile = entry.isFile;
      if (entry.isSymlink) {
        try {
          isFile = Deno.statSync(joinPath(dir, path)).isFile;
        } catch {
          isFile = false; // a broken link
        }
      }
      if (entry.isDirectory) walk(path);
      else if (isFile) (IMAGE_EXTENSIONS.test(entry.name) ? images : others).push(path);
    }
  };
  walk("");
  return { images: images.sort(), others: others.sort() };
}

/** The class names of a folder (sorted), or undefined when it is unlabelled. */
function classesOf(
  dir: string,
  scan: FolderScan,
  mode: LabelMode,
  split: "train" | "test",
): string[] | undefined {
  if (scan.images.length === 0) {
    const unsupported = scan.others.length === 0
      ? ""
      : ` (skipped ${describeSkipped(scan.others)})`;
    throw new DatasetError(
      dir,
      `no JPEG/PNG images in the ${split} split: the folder has no image files and no class ` +
        `sub-folders with images${unsupported}; put JPEG/PNG files in it (any layout, ` +
        "unlabelled) or in one sub-folder per class",
    );
  }
  if (mode === "none") return undefined;
  const top = scan.images.filter((f) => !f.includes("/"));
  const folders = [...new Set(scan.images.filter((f) => f.includes("/")).map(firstSegment))];
  if (top.length > 0 && folders.length > 0) {
    throw new DatasetError(
      dir,
      `mixed layout: ${top.length} images lie directly in the folder (${
        top.slice(0, 3).join(", ")
      }${top.length > 3 ? ", ..." : ""}) and ${scan.images.length - top.length} in sub-folders ` +
        `(${folders.slice(0, 3).join("/, ")}/${folders.length > 3 ? ", ..." : ""}): pass ` +
        "--labels none to train on all of them unlabelled, or move the top-level images into " +
        "class sub-folders",
    );
  }
  if (mode === "auto") return folders.length >= 2 ? folders.sort() : undefined;
  if (folders.length < 2) {
    throw new DatasetError(
      dir,
      `--labels folders needs at least two class sub-folders with images, found ${folders.length}` +
        `${folders.length ? ` (${folders[0]}/)` : ""}: add class folders, or pass --labels none ` +
        "to train unlabelled",
    );
  }
  return folders.sort();
}

function firstSegment(path: string): string {
  return path.slice(0, path.indexOf("/"));
}

/** A labelled test folder's classes must all be train classes. */
function checkTestClasses(dir: string, scan: FolderScan, classes: string[]): void {
  const known = new Set(classes);
  for (const entry of Deno.readDirSync(dir)) {
    if (entry.isDirectory && !entry.name.startsWith(".") && !known.has(entry.name)) {
      throw new DatasetError(
        joinPath(dir, entry.name),
        "class folder missing from the train split; every test class must have training images",
      );
    }
  }
  const top = scan.images.filter((f) => !f.includes("/"));
  if (top.length > 0) {
    throw new DatasetError(
      dir,
      `${top.length} images (${top.slice(0, 3).join(", ")}) lie outside the class folders of a ` +
        "labelled test split: move them into their class folders",
    );
  }
}

/** The entries of a folder's images, labelled by their first-level folder when `classes`. */
function entriesOf(dir: string, images: string[], classes: string[] | undefined): Entry[] {
  const entries = images.map((relative) => ({
    path: joinPath(dir, relative),
    relative,
    label: classes ? classes.indexOf(firstSegment(relative)) : 0,
  }));
  // Labelled: class by class (classes sorted), files sorted within a class.
  return classes ? entries.sort((a, b) => a.label - b.label) : entries;
}

/**
 * "3 files that are not JPEG/PNG (.heic x2, .txt x1): a.heic, b.heic, notes.txt", the first
 * `shown` named.
 */
export function describeSkipped(files: string[], shown = 5): string {
  const byExtension = new Map<string, number>();
  for (const f of files) {
    const name = f.slice(f.lastIndexOf("/") + 1);
    const dot = name.lastIndexOf(".");
    const extension = dot > 0 ? name.slice(dot).toLowerCase() : "(no extension)";
    byExtension.set(extension, (byExtension.get(extension) ?? 0) + 1);
  }
  const counts = [...byExtension].sort((a, b) => b[1] - a[1]).map(([e, n]) => `${e} x${n}`);
  return `${files.length} file${files.length === 1 ? "" : "s"} that ${
    files.length === 1 ? "is" : "are"
  } not JPEG/PNG (${counts.join(", ")}): ${files.slice(0, shown).join(", ")}` +
    `${files.length > shown ? ", ..." : ""}; convert images to JPEG or PNG to use them ` +
    "(e.g. ImageMagick: magick mogrify -format jpg *.heic)";
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
  readonly classes: number;
  readonly labelled: boolean;
  readonly files: readonly string[];
  private readonly pool: DecodePool | undefined;
  /** Shorter side of the evaluation resize. */
  readonly resize: number;

  constructor(
    dir: string,
    private readonly entries: Entry[],
    classNames: string[] | undefined,
    private readonly imageSize: number,
    options: FolderOptions,
    /** Files below the folder that were not loaded (not JPEG/PNG). */
    readonly skippedFiles: string[],
  ) {
    this.classes = classNames?.length ?? 1;
    this.labelled = classNames !== undefined;
    this.files = entries.map((e) => e.path);
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
