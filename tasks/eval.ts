/**
 * `deno task eval --checkpoint FILE [flags]`: the kNN monitor and the linear probe (METHOD.md
 * "Evaluation") of a checkpoint's backbone on a dataset's test split; prints and writes JSON.
 * Then pictures of what was learned, beside the JSON: a retrieval grid, a t-SNE map of the test
 * embeddings and the kNN confusion matrix (per-class accuracy also goes into the JSON).
 */
import { parseArgs } from "node:util";
import { acquireGpu } from "../runtime/gpu.ts";
import { loadBackbone } from "../models/load.ts";
import { evaluateBackbone } from "../models/evaluate.ts";
import { writeInsightPictures } from "./pictures.ts";
import { DATASET_NAMES, DatasetError, loadDataset } from "../data/dataset.ts";
import { nonNegativeInt, oneOf, positiveInt, Progress, runMain, UserError } from "./cli.ts";
import { PRESETS, type TrainConfig } from "./presets.ts";
import { EVAL_FORWARD_BATCH, evaluationOptions } from "./train_config.ts";

const HELP = `usage: deno task eval --checkpoint FILE [flags]
  --checkpoint FILE   a tritrain checkpoint (checkpoint.safetensors of a run)
  --dataset NAME      ${DATASET_NAMES.join("|")} (default: the run's)
  --data DIR          dataset directory (default: the run's, or the dataset's default)
  --bank N            training images in the kNN bank / probe set (0 = all; default: the run's)
  --test N            test images (0 = all)
  --knn-k N           neighbours (default 200)
  --probe-epochs N    linear probe epochs (0 skips the probe; default: the run's preset)
  --batch N           images per forward pass (default ${EVAL_FORWARD_BATCH})
  --out FILE          write the results as JSON here (default: beside the checkpoint)
  --map-points N      test images on the t-SNE map (default 1000; O(N^2) time)
  --no-pictures       skip the retrieval grid, the map and the confusion matrix PNGs`;

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: Deno.args,
      options: {
        checkpoint: { type: "string" },
        dataset: { type: "string" },
        data: { type: "string" },
        bank: { type: "string" },
        test: { type: "string" },
        "knn-k": { type: "string" },
        "probe-epochs": { type: "string" },
        batch: { type: "string" },
        out: { type: "string" },
        "map-points": { type: "string" },
        "no-pictures": { type: "boolean" },
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
  const mapPoints = positiveInt("map-points", flags["map-points"]) ?? 1000;
  const gpu = await acquireGpu({ log: true });
  const { backbone, state } = await loadBackbone(gpu, flags.checkpoint).catch((e) => {
    throw new UserError((e as Error).message);
  });
  const run = (state.trainConfig ?? PRESETS.small) as TrainConfig;
  const dataset = oneOf("dataset", flags.dataset, DATASET_NAMES) ?? run.dataset;
  // A run trained on unlabelled images with --eval-data is evaluated on that labelled folder.
  const runEvalData = run.evalData !== undefined && dataset === "folder";
  const dir = flags.data ?? (flags.dataset ? undefined : runEvalData ? run.evalData : run.data);
  const labels = flags.data || runEvalData ? undefined : run.labels;
  const source = { dir, imageSize: run.imageSize, labels };
  const load = (split: "train" | "test") =>
    loadDataset(dataset, { ...source, split }).catch((e) => {
      throw e instanceof DatasetError ? new UserError(e.message) : e;
    });
  const train = await load("train");
  const test = await load("test");
  if (train.labelled === false) {
    train.close?.();
    test.close?.();
    throw new UserError(
      `${dir} is unlabelled: kNN and probe accuracy need labels; pass --data DIR, a folder ` +
        "with one sub-folder per class (the training run's own pictures show its unlabelled " +
        "neighbours)",
    );
  }
  const progress = new Progress();
  const options = evaluationOptions(run, true, {
    knnK: positiveInt("knn-k", flags["knn-k"]),
    bankSize: nonNegativeInt("bank", flags.bank),
    testSize: nonNegativeInt("test", flags.test),
    probeEpochs: nonNegativeInt("probe-epochs", flags["probe-epochs"]),
    batchSize: positiveInt("batch", flags.batch),
  });
  const result = await evaluateBackbone(
    gpu,
    backbone,
    train,
    test,
    options,
    (what, done, total) => progress.update(`${what} ${done}/${total}`),
  );
  const out = flags.out ?? flags.checkpoint.replace(/\.safetensors$/, "") + ".eval.json";
  let report: Record<string, unknown> = {
    checkpoint: flags.checkpoint,
    dataset,
    step: state.step ?? null,
    ...result,
  };
  if (!flags["no-pictures"]) {
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
      },
      out.replace(/\.json$/, ""),
      (what, done, total) => progress.update(`${what} ${done}/${total}`),
    );
    report = { ...report, ...pictures };
  }
  train.close?.();
  test.close?.();
  progress.log(JSON.stringify(report, null, 1));
  await Deno.writeTextFile(out, JSON.stringify(report, null, 1) + "\n");
  console.log(`wrote ${out}`);
  return 0;
}

if (import.meta.main) runMain("eval", main);
