/**
 * ImageFolder: one sub-folder per class (classes sorted by name) of JPEG/PNG files (`.jpg`,
 * `.jpeg`, `.png`, any case; other files are ignored). Images are decoded in Web Workers
 * (`decode_worker.ts`) so training does not wait, and resized on the CPU to `imageSize` squared:
 * shorter side to `imageSize`, centre crop (antialiased bilinear).
 *
 * Split:
 * - If `dir/train` exists with `dir/val` (or `dir/test`), those are the train and test splits
 *   (the ImageNet layout); the classes are the train sub-folders, and a test class must be one of
 *   them.
 * - Otherwise every file of `dir/<class>/` belongs to one split by a seeded hash of its relative
 *   path: a fixed 10% ({@link HOLDOUT_FRACTION}) is held out as "test". The hash depends only on
 *   the path, so adding files never moves existing ones between the splits.
 */
import type { Dataset } from "./dataset.ts";
import { checkIndices, DatasetError, isDirectory, joinPath } from "./common.ts";
import { loadImageFile } from "./image.ts";
import { philox4x32 } from "./random.ts";
import type { DecodeReply, DecodeRequest } from "./decode_worker.ts";

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
    const cores = navigator.hardwareConcurrency ?? 2;
    const workers = options.workers ?? Math.min(4, Math.max(1, cores - 1));
    this.pool = workers > 0 ? new DecodePool(workers, options.idleMs ?? 5000) : undefined;
  }

  async batch(indices: ArrayLike<number>): Promise<{ pixels: Uint8Array; labels: Int32Array }> {
    checkIndices(this.name, indices, this.length);
    const size = this.imageSize;
    const imageBytes = size * size * 3;
    const paths = Array.from(indices, (i) => this.entries[i].path);
    const labels = Int32Array.from(indices, (i) => this.entries[i].label);
    const pixels = new Uint8Array(paths.length * imageBytes);
    if (!this.pool) {
      for (let k = 0; k < paths.length; k++) {
        pixels.set(await loadImageFile(paths[k], size), k * imageBytes);
      }
      return { pixels, labels };
    }
    // Contiguous chunks, one per worker, decoded in parallel.
    const chunk = Math.ceil(paths.length / this.pool.size);
    const jobs: Promise<void>[] = [];
    for (let start = 0; start < paths.length; start += chunk) {
      const part = paths.slice(start, start + chunk);
      jobs.push(this.pool.decode(part, size).then((p) => pixels.set(p, start * imageBytes)));
    }
    await Promise.all(jobs);
    return { pixels, labels };
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

  decode(paths: string[], size: number): Promise<Uint8Array> {
    this.cancelIdleTimer();
    if (this.workers.length === 0) this.start();
    const id = this.nextId++;
    const worker = this.workers[this.nextWorker++ % this.workers.length];
    return new Promise<Uint8Array>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, paths, size } satisfies DecodeRequest);
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
