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
import { type Insight, inspectBackbone } from "../models/insight.ts";
import {
  drawConfusionMatrix,
  drawEmbeddingMap,
  drawRetrievalGrid,
  retrievalRows,
  type RgbPicture,
} from "../data/pictures.ts";
import type { Dataset } from "../data/dataset.ts";
import { encode as encodePng } from "fast-png";
import { type DatasetName, loadDataset } from "../data/dataset.ts";
import { nonNegativeInt, oneOf, positiveInt, Progress, runMain, UserError } from "./cli.ts";
import { PRESETS, type TrainConfig } from "./presets.ts";

const HELP = `usage: deno task eval --checkpoint FILE [flags]
  --checkpoint FILE   a tritrain checkpoint (checkpoint.safetensors of a run)
  --dataset NAME      fashion-mnist|mnist|cifar10|cifar100|folder (default: the run's)
  --data DIR          dataset directory (default: the run's, or the dataset's default)
  --bank N            training images in the kNN bank / probe set (0 = all; default: the run's)
  --test N            test images (0 = all)
  --knn-k N           neighbours (default 200)
  --probe-epochs N    linear probe epochs (0 skips the probe; default: the run's preset)
  --batch N           images per forward pass (default 256)
  --out FILE          write the results as JSON here (default: beside the checkpoint)
  --map-points N      test images on the t-SNE map (default 1000; O(N^2) time)
  --no-pictures       skip the retrieval grid, the map and the confusion matrix PNGs`;

const DATASETS = ["fashion-mnist", "mnist", "cifar10", "cifar100", "folder"] as const;

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
  const dataset = (oneOf("dataset", flags.dataset, DATASETS) ?? run.dataset) as DatasetName;
  const dir = flags.data ?? (flags.dataset ? undefined : run.data);
  const options = { dir, imageSize: run.imageSize };
  const train = await loadDataset(dataset, { ...options, split: "train" });
  const test = await loadDataset(dataset, { ...options, split: "test" });
  const progress = new Progress();
  const result = await evaluateBackbone(gpu, backbone, train, test, {
    knnK: positiveInt("knn-k", flags["knn-k"]) ?? run.knnK,
    knnTemperature: run.knnTemperature,
    bankSize: nonNegativeInt("bank", flags.bank) ?? run.knnBankSize,
    testSize: nonNegativeInt("test", flags.test) ?? run.evalTestSize,
    probeEpochs: nonNegativeInt("probe-epochs", flags["probe-epochs"]) ?? run.probeEpochs,
    probeLr: run.probeLr,
    probeBatch: run.probeBatch,
    seed: run.seed,
    batchSize: positiveInt("batch", flags.batch) ?? 256,
  }, (what, done, total) => progress.update(`${what} ${done}/${total}`));
  const out = flags.out ?? flags.checkpoint.replace(/\.safetensors$/, "") + ".eval.json";
  let report: Record<string, unknown> = {
    checkpoint: flags.checkpoint,
    dataset,
    step: state.step ?? null,
    ...result,
  };
  if (!flags["no-pictures"]) {
    const insight = await inspectBackbone(gpu, backbone, train, test, {
      knnK: positiveInt("knn-k", flags["knn-k"]) ?? run.knnK,
      knnTemperature: run.knnTemperature,
      bankSize: result.bankSize,
      testSize: result.testSize,
      neighbours: 8,
      mapPoints,
      seed: run.seed,
      batchSize: positiveInt("batch", flags.batch) ?? 256,
    }, (what, done, total) => progress.update(`${what} ${done}/${total}`));
    const base = out.replace(/\.json$/, "");
    const pictures = {
      retrieval: `${base}.retrieval.png`,
      map: `${base}.map.png`,
      confusion: `${base}.confusion.png`,
    };
    await writePng(pictures.retrieval, await retrievalPicture(insight, train, test));
    await writePng(pictures.map, drawEmbeddingMap(insight.map, insight.mapLabels, train.classes));
    await writePng(pictures.confusion, drawConfusionMatrix(insight.confusion));
    report = {
      ...report,
      perClassKnnTop1: insight.perClassKnnTop1,
      confusion: insight.confusion,
      retrieval: insight.queries.map((query, i) => ({
        query,
        label: insight.queryLabels[i],
        neighbours: insight.neighbours[i],
        neighbourLabels: insight.neighbourLabels[i],
      })),
      pictures,
    };
  }
  train.close?.();
  test.close?.();
  progress.log(JSON.stringify(report, null, 1));
  await Deno.writeTextFile(out, JSON.stringify(report, null, 1) + "\n");
  console.log(`wrote ${out}`);
  return 0;
}

async function writePng(path: string, picture: RgbPicture): Promise<void> {
  await Deno.writeFile(path, encodePng({ ...picture, depth: 8 }));
  console.log(`wrote ${path}`);
}

/** Each query (test split) followed by its neighbours (train split), framed by class match. */
async function retrievalPicture(insight: Insight, train: Dataset, test: Dataset) {
  const rows = retrievalRows({
    queryPixels: (await test.batch(insight.queries)).pixels,
    neighbourPixels: (await train.batch(insight.neighbours.flat())).pixels,
    image: test,
    queryLabels: insight.queryLabels,
    neighbourLabels: insight.neighbourLabels,
    labelled: train.classes > 1,
  });
  return drawRetrievalGrid(rows, test);
}

if (import.meta.main) runMain("eval", main);
