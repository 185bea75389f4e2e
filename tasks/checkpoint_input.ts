/**
 * The checkpoint and dataset that `deno task eval` and `deno task embed` read, checked on the host
 * before the GPU is acquired: a missing, unreadable or foreign checkpoint and a dataset that is
 * unknown or not where the flags say are clear user errors.
 */
import { readCheckpoint } from "../models/checkpoint.ts";
import type { SslModelConfig } from "../models/ssl.ts";
import { DATASET_NAMES, type DatasetName } from "../data/dataset.ts";
import { existingDirectory, existingFile, oneOf, UserError } from "./cli.ts";
import { PRESETS, type TrainConfig } from "./presets.ts";

/** A checkpoint read from disk, and the training config it was written with. */
export interface CheckpointInput {
  checkpoint: Awaited<ReturnType<typeof readCheckpoint>>;
  /** The run's config (the default preset for a checkpoint that does not record one). */
  run: TrainConfig;
}

/** Read and check --checkpoint PATH (on the host only). */
export async function readCheckpointInput(path: string): Promise<CheckpointInput> {
  await existingFile("checkpoint", path);
  const checkpoint = await readCheckpoint(path).catch((e) => {
    throw new UserError(
      `--checkpoint ${path}: ${(e as Error).message} (give a run's checkpoint.safetensors)`,
    );
  });
  if (!(checkpoint.config as SslModelConfig)?.backbone?.arch) {
    throw new UserError(`--checkpoint ${path}: its metadata has no backbone config`);
  }
  const run = (checkpoint.state.trainConfig ?? PRESETS.small) as TrainConfig;
  return { checkpoint, run };
}

/**
 * The dataset to read: --dataset / --data, else the run's; a given --data must be a directory.
 * For `eval`, a run trained on unlabelled images with --eval-data is evaluated on that labelled
 * folder. The run's --labels rule applies only to the run's own folder.
 */
export async function datasetSource(
  flags: { dataset?: string; data?: string },
  run: TrainConfig,
  purpose: "eval" | "embed" = "embed",
): Promise<{ dataset: DatasetName; dir: string | undefined; labels: TrainConfig["labels"] }> {
  const dataset = oneOf("dataset", flags.dataset, DATASET_NAMES) ?? run.dataset;
  const runEvalData = purpose === "eval" && run.evalData !== undefined && dataset === "folder" &&
    flags.dataset === undefined;
  const dir = flags.data ?? (flags.dataset ? undefined : runEvalData ? run.evalData : run.data);
  const labels = flags.data || flags.dataset || runEvalData ? undefined : run.labels;
  if (flags.data !== undefined) await existingDirectory("data", flags.data);
  if (dataset === "folder" && dir === undefined) {
    throw new UserError("--dataset folder needs --data DIR (a folder of images)");
  }
  return { dataset, dir, labels };
}
