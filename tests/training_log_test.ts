/**
 * metrics.csv beside metrics.jsonl (no GPU: only the file side of TrainingLog): a header and one
 * row per JSON line with the same values, quoted text, a resume's truncation applied to both
 * files, and a missing metrics.csv (a run from before it existed) rebuilt from the JSON lines.
 */
import assert from "node:assert/strict";
import { METRICS_CSV_COLUMNS, type MetricsLine, TrainingLog } from "../models/training_log.ts";
import type { Gpu } from "../runtime/gpu.ts";

/** A log that writes `dir`/metrics.jsonl (appending needs no GPU). */
function fileLog(dir: string): TrainingLog {
  return new TrainingLog(undefined as unknown as Gpu, `${dir}/metrics.jsonl`, 2, 1, 100, () => 0);
}

const LINES: MetricsLine[] = [
  { step: 1, epoch: 0.01, loss: 99.5, lr: 0.3, ema: 0.9, imagesPerSecond: null, wallSeconds: 1.5 },
  { step: 2, epoch: 0.02, loss: 98.25, lr: 0.6, ema: 0.91, imagesPerSecond: 40.5, wallSeconds: 3 },
  { step: 2, knnTop1: 0.6875, linearTop1: null, linearTop5: null, evalSeconds: 2.25 },
  { step: 3, epoch: 0.03, loss: 97, lr: 0.9, ema: 0.92, imagesPerSecond: 41, wallSeconds: 4.5 },
];

/** metrics.csv parsed back into objects (empty cells dropped), numbers as numbers. */
async function readCsv(dir: string): Promise<{ header: string[]; rows: MetricsLine[] }> {
  const [header, ...rows] = (await Deno.readTextFile(`${dir}/metrics.csv`)).trimEnd().split("\n");
  const columns = header.split(",");
  return {
    header: columns,
    rows: rows.map((row) =>
      Object.fromEntries(
        row.split(",").map((cell, i) => [columns[i], cell]).filter(([, cell]) => cell !== "")
          .map(([column, cell]) => [column, Number(cell)]),
      )
    ),
  };
}

/** A line without its empty values, as the CSV keeps it. */
function present(line: MetricsLine): MetricsLine {
  return Object.fromEntries(Object.entries(line).filter(([, v]) => v !== null));
}

Deno.test("training log: metrics.csv has a header and one row per metrics.jsonl line", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/metrics.csv`, METRICS_CSV_COLUMNS.join(",") + "\n");
  const log = fileLog(dir);
  for (const line of LINES) await log.append(line);
  const { header, rows } = await readCsv(dir);
  assert.deepEqual(header, [...METRICS_CSV_COLUMNS]);
  assert.deepEqual(rows, LINES.map(present));
  assert.deepEqual(await TrainingLog.read(`${dir}/metrics.jsonl`), LINES);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("training log: a resume truncates metrics.csv with metrics.jsonl", async () => {
  const dir = await Deno.makeTempDir();
  const log = fileLog(dir);
  for (const line of LINES) await log.append(line);
  await TrainingLog.truncate(`${dir}/metrics.jsonl`, 2);
  const { rows } = await readCsv(dir);
  assert.deepEqual(rows, LINES.slice(0, 3).map(present));
  // The resumed run appends after the kept rows.
  const resumed = fileLog(dir);
  await resumed.append(LINES[3]);
  assert.deepEqual((await readCsv(dir)).rows, LINES.map(present));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("training log: a missing metrics.csv is rebuilt from metrics.jsonl at the next line", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(
    `${dir}/metrics.jsonl`,
    LINES.slice(0, 2).map((l) => JSON.stringify(l) + "\n").join(""),
  );
  const log = fileLog(dir);
  await log.append(LINES[2]);
  await log.append(LINES[3]);
  assert.deepEqual((await readCsv(dir)).rows, LINES.map(present));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("training log: text with a comma or a quote is quoted in metrics.csv", async () => {
  const dir = await Deno.makeTempDir();
  const log = fileLog(dir);
  await log.append({ step: 1, loss: 'a "b", c' });
  const text = await Deno.readTextFile(`${dir}/metrics.csv`);
  assert.equal(text.split("\n")[1], '1,,"a ""b"", c",,,,,,,,,');
  await Deno.remove(dir, { recursive: true });
});
