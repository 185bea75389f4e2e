/**
 * `deno task embed --checkpoint FILE --dataset NAME [--split train|test] --out FILE.npy`:
 * backbone features (global-average-pooled, eval-mode BN) of every image in dataset order, as a
 * float32 .npy matrix (rows = images) that numpy.load reads.
 */
import { acquireGpu } from "../runtime/gpu.ts";
import { backboneFromCheckpoint } from "../models/load.ts";
import { extractFeatures } from "../models/evaluate.ts";
import { DATASET_NAMES, loadDataset } from "../data/dataset.ts";
import {
  flagHelp,
  type FlagRow,
  oneOf,
  parseFlagTable,
  positiveInt,
  Progress,
  runMain,
  UserError,
  writableFile,
} from "./cli.ts";
import { EVAL_FORWARD_BATCH } from "./train_config.ts";
import { writeFileAtomic } from "../models/safetensors.ts";
import { datasetSource, readCheckpointInput } from "./checkpoint_input.ts";

/** Every flag of `deno task embed`, in --help order. */
export const EMBED_FLAGS: FlagRow[] = [
  { name: "checkpoint", value: "FILE", help: "a tritrain checkpoint (required)" },
  {
    name: "out",
    value: "FILE.npy",
    help: "output (required): float32 [images, features]; labels go to FILE.labels.npy (not for " +
      "unlabelled images), an image folder's file names (row order) to FILE.files.txt; such a " +
      "file left by an earlier embedding that this one does not write is removed",
  },
  {
    name: "dataset",
    value: "NAME",
    help: `${DATASET_NAMES.join(" | ")} (default: the run's)`,
  },
  { name: "data", value: "DIR", help: "dataset directory (default: the run's, or the dataset's)" },
  { name: "split", value: "S", help: "train | test (default test)" },
  { name: "batch", value: "N", help: `images per forward pass (default ${EVAL_FORWARD_BATCH})` },
  { name: "help", help: "this text" },
];

const HELP = flagHelp(
  "deno task embed --checkpoint FILE --out FILE.npy [flags]",
  "Backbone features of every image of a split, in dataset order, as a .npy matrix.\n" +
    "Every flag and input is checked before the GPU, the checkpoint or the data are loaded.",
  EMBED_FLAGS,
);

/** A .npy (version 1.0) file of a 2-D little-endian array. */
export function encodeNpy(
  data: Float32Array | Int32Array,
  rows: number,
  cols?: number,
): Uint8Array {
  const descr = data instanceof Float32Array ? "<f4" : "<i4";
  const shape = cols === undefined ? `(${rows},)` : `(${rows}, ${cols})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
  const unpadded = 10 + header.length + 1;
  header += " ".repeat((64 - (unpadded % 64)) % 64) + "\n";
  const out = new Uint8Array(10 + header.length + data.byteLength);
  out.set([0x93, ...new TextEncoder().encode("NUMPY"), 1, 0], 0);
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + header.length);
  return out;
}

async function main(): Promise<number> {
  const values = parseFlagTable(EMBED_FLAGS, Deno.args);
  const flags = values as Record<string, string | undefined>;
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!flags.checkpoint) throw new UserError("--checkpoint FILE is required (see --help)");
  if (!flags.out) throw new UserError("--out FILE.npy is required (see --help)");
  const split = oneOf("split", flags.split ?? "test", ["train", "test"] as const)!;
  const batchSize = positiveInt("batch", flags.batch) ?? EVAL_FORWARD_BATCH;
  await writableFile("out", flags.out);
  const { checkpoint, run } = await readCheckpointInput(flags.checkpoint);
  const { dataset, dir, labels } = await datasetSource(
    { dataset: flags.dataset, data: flags.data },
    run,
  );
  const source = await loadDataset(dataset, { dir, split, imageSize: run.imageSize, labels });
  const gpu = await acquireGpu({ log: true });
  const { backbone } = backboneFromCheckpoint(gpu, checkpoint, flags.checkpoint);
  const progress = new Progress();
  const indices = Uint32Array.from({ length: source.length }, (_, i) => i);
  const extracted = await extractFeatures(
    gpu,
    backbone,
    source,
    indices,
    batchSize,
    (done, total) => progress.update(`embedding ${progress.bar(done / total)} ${done}/${total}`),
  );
  source.close?.();
  const { features, dim } = extracted;
  await writeFileAtomic(flags.out, encodeNpy(features, source.length, dim));
  const base = flags.out.replace(/\.npy$/, "");
  const written = [`${flags.out} (${source.length} x ${dim} float32)`];
  // A side file this source has no values for would describe an earlier embedding's rows.
  const removed: string[] = [];
  if (source.labelled !== false) {
    await writeFileAtomic(`${base}.labels.npy`, encodeNpy(extracted.labels, source.length));
    written.push(`${base}.labels.npy`);
  } else if (await removeIfPresent(`${base}.labels.npy`)) {
    removed.push(`${base}.labels.npy`);
  }
  if (source.files) {
    await writeFileAtomic(
      `${base}.files.txt`,
      new TextEncoder().encode(source.files.join("\n") + "\n"),
    );
    written.push(`${base}.files.txt (the image of each row)`);
  } else if (await removeIfPresent(`${base}.files.txt`)) {
    removed.push(`${base}.files.txt`);
  }
  progress.log(
    `wrote ${written.join(", ")}` +
      (source.labelled === false ? "; no labels file: the images are unlabelled" : "") +
      (removed.length > 0
        ? `; removed ${removed.join(" and ")} of an earlier embedding (other rows)`
        : ""),
  );
  return 0;
}

/** Remove a file if it exists; whether it did. */
async function removeIfPresent(path: string): Promise<boolean> {
  try {
    await Deno.remove(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

if (import.meta.main) runMain("embed", main);
