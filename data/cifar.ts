/**
 * CIFAR-10 and CIFAR-100 in their binary versions (https://www.cs.toronto.edu/~kriz/cifar.html).
 * CIFAR-10: `data_batch_1..5.bin` (train) and `test_batch.bin`, records of 1 label byte + 3072
 * pixel bytes. CIFAR-100: `train.bin` and `test.bin`, records of coarse label, fine label, 3072
 * pixel bytes; we use the 100 fine labels. Pixels are stored planar (1024 R, 1024 G, 1024 B) and
 * converted to HWC here.
 */
import type { Dataset } from "./dataset.ts";
import { DatasetError, isDirectory, isFile, joinPath } from "./common.ts";
import { ArrayDataset } from "./memory.ts";

const SIDE = 32;
const PLANE = SIDE * SIDE;
const IMAGE_BYTES = 3 * PLANE;

interface CifarLayout {
  /** Sub-folder the official archive unpacks to (searched when the files are not at the top). */
  archiveFolder: string;
  files: Record<"train" | "test", string[]>;
  /** Label bytes before the pixels, and which of them is the label we use. */
  labelBytes: number;
  labelOffset: number;
  classes: number;
  /** Range of every label byte, for validation (CIFAR-100's coarse label has 20 classes). */
  labelRanges: number[];
  mean: number[];
  std: number[];
}

const LAYOUTS: Record<"cifar10" | "cifar100", CifarLayout> = {
  cifar10: {
    archiveFolder: "cifar-10-batches-bin",
    files: {
      train: [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`),
      test: ["test_batch.bin"],
    },
    labelBytes: 1,
    labelOffset: 0,
    classes: 10,
    labelRanges: [10],
    mean: [0.4914, 0.4822, 0.4465],
    std: [0.2470, 0.2435, 0.2616],
  },
  cifar100: {
    archiveFolder: "cifar-100-binary",
    files: { train: ["train.bin"], test: ["test.bin"] },
    labelBytes: 2,
    labelOffset: 1,
    classes: 100,
    labelRanges: [20, 100],
    mean: [0.5071, 0.4865, 0.4409],
    std: [0.2673, 0.2564, 0.2762],
  },
};

/** Load a CIFAR split from a directory of the binary files. */
export async function loadCifar(
  name: "cifar10" | "cifar100",
  dir: string | undefined,
  split: "train" | "test",
): Promise<Dataset> {
  const layout = LAYOUTS[name];
  const howToGet =
    `download the binary version from https://www.cs.toronto.edu/~kriz/cifar.html, ` +
    "unpack it and pass --data DIR";
  if (!dir) throw new Error(`${name} needs a directory: ${howToGet}`);
  if (!isDirectory(dir)) throw new DatasetError(dir, `${name} directory not found: ${howToGet}`);
  const nested = joinPath(dir, layout.archiveFolder);
  const base = isFile(joinPath(dir, layout.files[split][0])) || !isDirectory(nested) ? dir : nested;
  const recordBytes = layout.labelBytes + IMAGE_BYTES;
  const parts: { pixels: Uint8Array; labels: Int32Array }[] = [];
  for (const fileName of layout.files[split]) {
    const file = joinPath(base, fileName);
    if (!isFile(file)) throw new DatasetError(file, `${name} file not found: ${howToGet}`);
    parts.push(parseCifarRecords(await Deno.readFile(file), file, layout, recordBytes));
  }
  const count = parts.reduce((n, p) => n + p.labels.length, 0);
  const pixels = new Uint8Array(count * IMAGE_BYTES);
  const labels = new Int32Array(count);
  let offset = 0;
  for (const part of parts) {
    pixels.set(part.pixels, offset * IMAGE_BYTES);
    labels.set(part.labels, offset);
    offset += part.labels.length;
  }
  return new ArrayDataset(
    {
      name,
      classes: layout.classes,
      height: SIDE,
      width: SIDE,
      channels: 3,
      mean: layout.mean,
      std: layout.std,
    },
    pixels,
    labels,
  );
}

function parseCifarRecords(
  bytes: Uint8Array,
  file: string,
  layout: CifarLayout,
  recordBytes: number,
): { pixels: Uint8Array; labels: Int32Array } {
  if (bytes.length === 0 || bytes.length % recordBytes !== 0) {
    throw new DatasetError(
      file,
      `${bytes.length} bytes is not a whole number of ${recordBytes}-byte records ` +
        `(${layout.labelBytes} label byte${layout.labelBytes > 1 ? "s" : ""} + 32x32x3 pixels): ` +
        "truncated, or not this CIFAR version's binary file; download it again",
    );
  }
  const count = bytes.length / recordBytes;
  const pixels = new Uint8Array(count * IMAGE_BYTES);
  const labels = new Int32Array(count);
  for (let r = 0; r < count; r++) {
    const record = r * recordBytes;
    for (let b = 0; b < layout.labelBytes; b++) {
      const value = bytes[record + b];
      if (value >= layout.labelRanges[b]) {
        throw new DatasetError(
          file,
          `record ${r}: label byte ${b} is ${value}, out of range [0, ${layout.labelRanges[b]}); ` +
            "the file is corrupt or not this CIFAR version (CIFAR-10 records have 1 label byte, " +
            "CIFAR-100 records 2)",
        );
      }
    }
    labels[r] = bytes[record + layout.labelOffset];
    const planes = record + layout.labelBytes;
    const out = r * IMAGE_BYTES;
    for (let p = 0; p < PLANE; p++) {
      pixels[out + 3 * p] = bytes[planes + p];
      pixels[out + 3 * p + 1] = bytes[planes + PLANE + p];
      pixels[out + 3 * p + 2] = bytes[planes + 2 * PLANE + p];
    }
  }
  return { pixels, labels };
}
