/**
 * Pictures of what a backbone learned, written as PNGs beside a run's or an evaluation's JSON
 * (`deno task eval`; `deno task train` can call the same after its final evaluation): the
 * retrieval grid, the t-SNE map and the kNN confusion matrix, plus their numbers for the JSON.
 */
import { encode as encodePng } from "fast-png";
import type { Gpu } from "../runtime/gpu.ts";
import type { ResNet } from "../models/resnet.ts";
import { type Insight, type InsightOptions, inspectBackbone } from "../models/insight.ts";
import {
  drawConfusionMatrix,
  drawEmbeddingMap,
  drawRetrievalGrid,
  retrievalRows,
  type RgbPicture,
} from "../data/pictures.ts";
import type { Dataset } from "../data/dataset.ts";

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

/**
 * Inspect the backbone, write `<base>.retrieval.png`, `<base>.map.png` and
 * `<base>.confusion.png`, and return the fields to add to the JSON report.
 */
export async function writeInsightPictures(
  gpu: Gpu,
  backbone: ResNet,
  train: Dataset,
  test: Dataset,
  options: InsightOptions,
  base: string,
  onProgress?: (what: string, done: number, total: number) => void,
): Promise<Record<string, unknown>> {
  const insight = await inspectBackbone(gpu, backbone, train, test, options, onProgress);
  // Unlabelled images (one class): neighbours and the map without class marks, no confusion.
  const labelled = train.labelled !== false && train.classes > 1;
  const pictures = {
    retrieval: `${base}.retrieval.png`,
    map: `${base}.map.png`,
    ...(labelled ? { confusion: `${base}.confusion.png` } : {}),
  };
  await writePng(pictures.retrieval, await retrievalPicture(insight, train, test));
  await writePng(pictures.map, drawEmbeddingMap(insight.map, insight.mapLabels, train.classes));
  if (pictures.confusion) {
    await writePng(pictures.confusion, drawConfusionMatrix(insight.confusion));
  } else console.log("no confusion matrix or per-class accuracy: the images are unlabelled");
  return {
    ...(labelled
      ? { perClassKnnTop1: insight.perClassKnnTop1, confusion: insight.confusion }
      : { unlabelled: true }),
    // Indices into the test (queries) and train (neighbours) splits; labels only where they exist.
    retrieval: insight.queries.map((query, i) => ({
      query,
      ...(labelled ? { label: insight.queryLabels[i] } : {}),
      neighbours: insight.neighbours[i],
      ...(labelled ? { neighbourLabels: insight.neighbourLabels[i] } : {}),
    })),
    pictures,
  };
}
