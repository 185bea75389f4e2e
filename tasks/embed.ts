/**
 * `deno task embed --checkpoint FILE --dataset NAME [--split train|test] --out FILE.npy`:
 * backbone features (global-average-pooled, eval-mode BN) of every image in dataset order, as a
 * float32 .npy matrix (rows = images) that numpy.load reads.
 */
import { parseArgs } from "node:util";
import { acquireGpu } from "../runtime/gpu.ts";
import { loadBackbone } from "../models/load.ts";
import { extractFeatures } from "../models/evaluate.ts";
import { DATASET_NAMES, loadDataset } from "../data/dataset.ts";
import { oneOf, positiveInt, Progress, runMain, UserError } from "./cli.ts";
import { PRESETS, type TrainConfig } from "./presets.ts";
import { EVAL_FORWARD_BATCH } from "./train_config.ts";
import { writeFileAtomic } from "../models/safetensors.ts";

const HELP = `usage: deno task embed --checkpoint FILE --out FILE.npy [flags]
  --checkpoint FILE   a tritrain checkpoint
  --dataset NAME      ${DATASET_NAMES.join("|")} (default: the run's)
  --data DIR          dataset directory
  --split S           train|test (default test)
  --batch N           images per forward pass (default ${EVAL_FORWARD_BATCH})
  --out FILE.npy      output: float32 [images, features]; labels go to FILE.labels.npy (not for
                      unlabelled images), an image folder's file names (row order) to FILE.files.txt`;

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
  let parsed;
  try {
    parsed = parseArgs({
      args: Deno.args,
      options: {
        checkpoint: { type: "string" },
        dataset: { type: "string" },
        data: { type: "string" },
        split: { type: "string", default: "test" },
        batch: { type: "string" },
        out: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    throw new UserError(`${(e as Error).message}\n${HELP}`);
  }
  const flags = parsed.values;
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  if (!flags.checkpoint) throw new UserError(`--checkpoint FILE is required\n${HELP}`);
  if (!flags.out) throw new UserError(`--out FILE.npy is required\n${HELP}`);
  const split = oneOf("split", flags.split, ["train", "test"] as const)!;
  const gpu = await acquireGpu({ log: true });
  const { backbone, state } = await loadBackbone(gpu, flags.checkpoint).catch((e) => {
    throw new UserError((e as Error).message);
  });
  const run = (state.trainConfig ?? PRESETS.small) as TrainConfig;
  const dataset = oneOf("dataset", flags.dataset, DATASET_NAMES) ?? run.dataset;
  const dir = flags.data ?? (flags.dataset ? undefined : run.data);
  const labels = flags.data || flags.dataset ? undefined : run.labels;
  const source = await loadDataset(dataset, { dir, split, imageSize: run.imageSize, labels });
  const progress = new Progress();
  const indices = Uint32Array.from({ length: source.length }, (_, i) => i);
  const extracted = await extractFeatures(
    gpu,
    backbone,
    source,
    indices,
    positiveInt("batch", flags.batch) ?? EVAL_FORWARD_BATCH,
    (done, total) => progress.update(`embedding ${progress.bar(done / total)} ${done}/${total}`),
  );
  source.close?.();
  const { features, dim } = extracted;
  await writeFileAtomic(flags.out, encodeNpy(features, source.length, dim));
  const base = flags.out.replace(/\.npy$/, "");
  const written = [`${flags.out} (${source.length} x ${dim} float32)`];
  if (source.labelled !== false) {
    await writeFileAtomic(`${base}.labels.npy`, encodeNpy(extracted.labels, source.length));
    written.push(`${base}.labels.npy`);
  }
  if (source.files) {
    await writeFileAtomic(
      `${base}.files.txt`,
      new TextEncoder().encode(source.files.join("\n") + "\n"),
    );
    written.push(`${base}.files.txt (the image of each row)`);
  }
  progress.log(
    `wrote ${written.join(", ")}` +
      (source.labelled === false ? "; no labels file: the images are unlabelled" : ""),
  );
  return 0;
}

if (import.meta.main) runMain("embed", main);
