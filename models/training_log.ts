/**
 * The training metrics: each optimizer step's loss stays on the GPU (one small tensor per step)
 * until the log is flushed; a flush reads every pending loss and the parameter/gradient norms in
 * one readback, stops a diverged run, and appends one JSON line per step to metrics.jsonl, and
 * the same values as one row to metrics.csv beside it (fixed columns, for spreadsheets and plots).
 */
import type { Gpu, Tensor } from "../runtime/gpu.ts";
import { writeFileAtomic } from "./safetensors.ts";

/** One line of metrics.jsonl. */
export type MetricsLine = Record<string, number | string | null>;

/**
 * The columns of metrics.csv: a step's loss row fills the first ones, an evaluation row (its own
 * row at the step it ran after) the kNN / probe ones; keys outside this list are in metrics.jsonl
 * only.
 */
export const METRICS_CSV_COLUMNS = [
  "step",
  "epoch",
  "loss",
  "lr",
  "ema",
  "imagesPerSecond",
  "wallSeconds",
  "syncMs",
  "knnTop1",
  "linearTop1",
  "linearTop5",
  "evalSeconds",
] as const;

/** metrics.csv beside a metrics.jsonl (undefined for any other file name). */
export function metricsCsvPath(jsonlPath: string): string | undefined {
  return jsonlPath.endsWith(".jsonl") ? jsonlPath.replace(/\.jsonl$/, ".csv") : undefined;
}

/** One metrics line as a CSV row (empty cells for absent values; text quoted when needed). */
export function metricsCsvRow(line: MetricsLine): string {
  return METRICS_CSV_COLUMNS.map((column) => {
    const value = line[column];
    if (value === undefined || value === null) return "";
    const text = String(value);
    return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  }).join(",") + "\n";
}

/** The whole metrics.csv of some metrics lines: the header, then one row per line. */
export function metricsCsv(lines: MetricsLine[]): string {
  return METRICS_CSV_COLUMNS.join(",") + "\n" + lines.map(metricsCsvRow).join("");
}

/** Write a file whole (models/safetensors.ts: synced, then renamed over it), never half of it. */
function replaceText(path: string, text: string): Promise<void> {
  return writeFileAtomic(path, new TextEncoder().encode(text));
}

/** A non-finite loss or norm: the run has diverged at `step`. */
export class DivergedError extends Error {
  constructor(readonly step: number, readonly why: string) {
    super(`training diverged at step ${step}: ${why}`);
  }
}

/** What one flush read back. */
export interface FlushResult {
  /** The last step's loss (mean over micro-batches of the summed directions). */
  lastLoss: number;
  imagesPerSecond: number;
}

/** Per-step losses kept on the GPU, read back and written in batches. */
export class TrainingLog {
  private pending: {
    step: number;
    lr: number;
    ema: number;
    tensor: Tensor;
    /** Data-parallel: readback + all-reduce + upload of this step's gradients. */
    syncMs?: number;
  }[] = [];
  private imagesSinceFlush = 0;
  private flushClock = performance.now();
  /** Whether metrics.csv is known to exist (checked at the first line). */
  private csvReady = false;

  /**
   * @param lossSlots loss values one step writes (directions x micro-batches)
   * @param microBatches the divisor that turns the slots' sum into the step's loss
   * @param wallSeconds the run's wall clock (including the time before a resume)
   * @param path metrics.jsonl, or undefined to write nothing (data-parallel ranks other than 0)
   */
  constructor(
    readonly gpu: Gpu,
    readonly path: string | undefined,
    readonly lossSlots: number,
    readonly microBatches: number,
    readonly stepsPerEpoch: number,
    readonly wallSeconds: () => number,
  ) {}

  /** A fresh tensor for the loss slots of step `step` (1-based: steps done after it). */
  slot(step: number, lr: number, ema: number, images: number): Tensor {
    const tensor = this.gpu.empty([this.lossSlots]);
    this.pending.push({ step, lr, ema, tensor });
    this.imagesSinceFlush += images;
    return tensor;
  }

  /** The gradient synchronisation time of the latest step (data-parallel runs). */
  recordSync(milliseconds: number): void {
    this.pending.at(-1)!.syncMs = milliseconds;
  }

  /**
   * Read back every pending loss and `norms` (the model's parameter and gradient norms), throw
   * {@link DivergedError} on a non-finite value, and append one line per step.
   */
  async flush(norms: Tensor): Promise<FlushResult> {
    const pending = this.pending;
    this.pending = [];
    const [normValues, ...values] = await this.gpu.read([norms, ...pending.map((p) => p.tensor)]);
    try {
      if (!normValues.every(Number.isFinite)) {
        throw new DivergedError(pending.at(-1)!.step, "parameter or gradient norms are not finite");
      }
      const seconds = (performance.now() - this.flushClock) / 1000;
      const imagesPerSecond = this.imagesSinceFlush / seconds;
      let lastLoss = NaN;
      for (let i = 0; i < pending.length; i++) {
        const p = pending[i];
        lastLoss = Array.from(values[i]).reduce((a, b) => a + b, 0) / this.microBatches;
        if (!Number.isFinite(lastLoss)) throw new DivergedError(p.step, `the loss is ${lastLoss}`);
        await this.append({
          step: p.step,
          epoch: +(p.step / this.stepsPerEpoch).toFixed(4),
          loss: lastLoss,
          lr: p.lr,
          ema: p.ema,
          imagesPerSecond: i === pending.length - 1 ? +imagesPerSecond.toFixed(2) : null,
          wallSeconds: +this.wallSeconds().toFixed(2),
          ...(p.syncMs !== undefined ? { syncMs: +p.syncMs.toFixed(2) } : {}),
        });
      }
      this.imagesSinceFlush = 0;
      this.flushClock = performance.now();
      return { lastLoss, imagesPerSecond };
    } finally {
      for (const p of pending) p.tensor.release();
    }
  }

  /** Append one line to metrics.jsonl and its row to metrics.csv. */
  async append(line: MetricsLine): Promise<void> {
    if (this.path === undefined) return;
    await Deno.writeTextFile(this.path, JSON.stringify(line) + "\n", { append: true });
    const csv = metricsCsvPath(this.path);
    if (csv === undefined) return;
    if (!this.csvReady) {
      // No metrics.csv yet (a run started before it existed): write it whole from the JSON lines.
      this.csvReady = true;
      if (!await Deno.stat(csv).then(() => true, () => false)) {
        await replaceText(csv, metricsCsv(await TrainingLog.read(this.path)));
        return;
      }
    }
    await Deno.writeTextFile(csv, metricsCsvRow(line), { append: true });
  }

  /** Every line of a metrics.jsonl ([] when there is none). */
  static async read(path: string): Promise<MetricsLine[]> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return [];
      throw e;
    }
    return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  }

  /**
   * Keep only the lines up to `step` (a resumed run rewrites what came after), in metrics.jsonl
   * and in metrics.csv (rewritten from the kept lines).
   */
  static async truncate(path: string, step: number): Promise<void> {
    const kept = (await TrainingLog.read(path)).filter((m) => (m.step as number) <= step);
    await replaceText(path, kept.map((m) => JSON.stringify(m) + "\n").join(""));
    const csv = metricsCsvPath(path);
    if (csv !== undefined) await replaceText(csv, metricsCsv(kept));
  }
}
