/**
 * `deno task eval --checkpoint FILE [flags]`: the kNN monitor and the linear probe (METHOD.md
 * "Evaluation") of a checkpoint's backbone on a dataset's test split; prints and writes JSON.
 * Then pictures of what was learned, beside the JSON: a retrieval grid, a t-SNE map of the test
 * embeddings and the kNN confusion matrix (per-class accuracy also goes into the JSON).
 */
import { acquireGpu } from "../runtime/gpu.ts";
import { backboneFromCheckpoint } from "../models/load.ts";
import { evaluateBackbone, type EvaluatedFeatures } from "../models/evaluate.ts";
import { writeFileAtomic } from "../models/safetensors.ts";
import { writeInsightPictures } from "./pictures.ts";
import { DATASET_NAMES, loadDataset } from "../data/dataset.ts";
import {
  flagHelp,
  type FlagRow,
  nonNegativeInt,
  parseFlagTable,
  positiveInt,
  Progress,
  runMain,
  UserError,
  writableFile,
} from "./cli.ts";
import { EVAL_FORWARD_BATCH, evaluationOptions } from "./train_config.ts";
import { datasetSource, readCheckpointInput } from "./checkpoint_input.ts";

/** Every flag of `deno task eval`, in --help order. */
export const EVAL_FLAGS: FlagRow[] = [
  {
    name: "checkpoint",
    value: "FILE",
    help: "a tritrain checkpoint (a run's checkpoint.safetensors); required",
  },
  {
    name: "dataset",
    value: "NAME",
    help: `${DATASET_NAMES.join(" | ")} (default: the run's)`,
  },
  { name: "data", value: "DIR", help: "dataset directory (default: the run's, or the dataset's)" },
  {
    name: "bank",
    value: "N",
    help: "training images in the kNN bank and probe set (0: all; default: the run's)",
  },
  { name: "test", value: "N", help: "test images evaluated (0: all; default: the run's)" },
  { name: "knn-k", value: "N", help: "kNN neighbours (default: the run's, 200)" },
  {
    name: "probe-epochs",
    value: "N",
    help: "linear probe epochs (0 skips the probe; default: the run's)",
  },
  { name: "batch", value: "N", help: `images per forward pass (default ${EVAL_FORWARD_BATCH})` },
  {
    name: "out",
    value: "FILE",
    help: "the results as JSON (default: beside the checkpoint, CHECKPOINT.eval.json); the " +
      "pictures go beside it",
  },
  { name: "map-points", value: "N", help: "test images on the t-SNE map (default 1000; O(N^2))" },
  { name: "no-pictures", help: "skip the retrieval grid, the map and the confusion matrix PNGs" },
  { name: "help", help: "this text" },
];

const HELP = flagHelp(
  "deno task eval --checkpoint FILE [flags]",
  "kNN monitor and linear probe of a checkpoint's backbone, plus pictures of what it learned.\n" +
    "Every flag and input is checked before the GPU, the checkpoint or the data are loaded.",
  EVAL_FLAGS,
);

async function main(): Promise<number> {
  const values = parseFlagTable(EVAL_FLAGS, Deno.args);
  // The switches are read from `values`; every other flag is a string.
  const flags = values as Record<string, string | undefined>;
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!flags.checkpoint) throw new UserError("--checkpoint FILE is required (see --help)");
  // Every number first, then the files: nothing is loaded before all of it is known good.
  const mapPoints = positiveInt("map-points", flags["map-points"]) ?? 1000;
  const overrides = {
    knnK: positiveInt("knn-k", flags["knn-k"]),
    bankSize: nonNegativeInt("bank", flags.bank),
    testSize: nonNegativeInt("test", flags.test),
    probeEpochs: nonNegativeInt("probe-epochs", flags["probe-epochs"]),
    batchSize: positiveInt("batch", flags.batch),
  };
  const out = flags.out ?? flags.checkpoint.replace(/\.safetensors$/, "") + ".eval.json";
  await writableFile("out", out);
  const { checkpoint, run } = await readCheckpointInput(flags.checkpoint);
  const { dataset, dir, labels } = await datasetSource(
    { dataset: flags.dataset, data: flags.data },
    run,
    "eval",
  );
  const source = { dir, imageSize: run.imageSize, labels };
  const train = await loadDataset(dataset, { ...source, split: "train" });
  const test = await loadDataset(dataset, { ...source, split: "test" });
  if (train.labelled === false) {
    train.close?.();
    test.close?.();
    throw new UserError(
      `${dir} is unlabelled: kNN and probe accuracy need labels; pass --data DIR, a folder ` +
        "with one sub-folder per class (the training run's own pictures show its unlabelled " +
        "neighbours)",
    );
  }
  const options = evaluationOptions(run, true, overrides);
  const gpu = await acquireGpu({ log: true });
  const { backbone } = backboneFromCheckpoint(gpu, checkpoint, flags.checkpoint);
  const state = checkpoint.state;
  const progress = new Progress();
  let evaluated: EvaluatedFeatures | undefined;
  const result = await evaluateBackbone(
    gpu,
    backbone,
    train,
    test,
    options,
    (what, done, total) => progress.update(`${what} ${done}/${total}`),
    (features) => evaluated = features,
  );
  let report: Record<string, unknown> = {
    checkpoint: flags.checkpoint,
    dataset,
    step: state.step ?? null,
    ...result,
  };
  if (!values["no-pictures"]) {
    const pictures = await writeInsightPictures(
      gpu,
      backbone,
      train,
      test,
      {
        knnK: options.knnK,
        knnTemperature: options.knnTemperature,
        bankSize: result.bankSize,
        testSize: result.testSize,
        neighbours: 8,
        mapPoints,
        seed: options.seed,
        batchSize: options.batchSize,
        features: evaluated,
      },
      out.replace(/\.json$/, ""),
      (what, done, total) => progress.update(`${what} ${done}/${total}`),
    );
    report = { ...report, ...pictures };
  }
  train.close?.();
  test.close?.();
  progress.log(JSON.stringify(report, null, 1));
  await writeFileAtomic(out, new TextEncoder().encode(JSON.stringify(report, null, 1) + "\n"));
  console.log(`wrote ${out}`);
  return 0;
}

if (import.meta.main) runMain("eval", main);
