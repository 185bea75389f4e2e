/**
 * Shared benchmark plumbing: timing GPU work, a row format every part returns, and the
 * side-by-side table. Each part lives in `bench/<part>.ts` and exports
 * `run(ctx: BenchContext): Promise<BenchRow[]>`; `tasks/bench.ts` runs them.
 */
import type { Gpu } from "../runtime/gpu.ts";
import type { ResNetConfig } from "../models/resnet.ts";
import type { LarsConfig, SslModelConfig } from "../models/ssl.ts";

/**
 * The training preset a part runs (the SSL step): its model, batch and optimiser settings, in the
 * field names of `tasks/presets.ts`. The caller (`tasks/bench.ts`) passes one of its presets, so
 * bench/ never imports tasks/.
 */
export type BenchPreset =
  & Pick<ResNetConfig, "arch" | "widths" | "smallImage">
  & Pick<SslModelConfig, "projectorHidden" | "projectorOut" | "predictorHidden" | "loss">
  & LarsConfig
  & {
    /** The preset's name, for row labels. */
    preset: string;
    imageSize: number;
    batch: number;
    accum: number;
    lr: number;
    emaBase: number;
    seed: number;
  };

/** What every benchmark part receives. */
export interface BenchContext {
  gpu: Gpu;
  /** Fewer/smaller cases (CI smoke runs). */
  quick: boolean;
  /** Also time the same work in tfjs-backend-webgpu. */
  withTfjs: boolean;
  /** Extra flags after the part name, e.g. `--profile`. */
  flags: Record<string, string | boolean>;
  /** The preset whose SSL step the step part times (absent: that row is skipped). */
  preset?: BenchPreset;
}

/** One measured quantity for one implementation. */
export interface Measurement {
  /** Milliseconds per iteration. */
  ms: number;
  /** Throughput in GFLOP/s, when the work has a FLOP count. */
  gflops?: number;
  /** Images (or samples) per second, when that is the natural unit. */
  perSecond?: number;
}

/** One line of a benchmark table: our figure, the peer's, and the ratio (peer time / ours). */
export interface BenchRow {
  part: string;
  case: string;
  ours: Measurement;
  tfjs?: Measurement;
  /** How many times faster we are than tfjs (tfjs ms / our ms), or than `pytorch` when set. */
  ratio?: number;
  /** The same work in PyTorch on the CPU (step rows whose case says "vs PyTorch CPU"). */
  pytorch?: Measurement;
  /** Kernel dispatches our implementation encodes per iteration (step rows). */
  dispatches?: number;
  note?: string;
}

/**
 * Milliseconds per call of `encode` (which only encodes GPU work), after `warmup` untimed calls,
 * with a single wait for the GPU at the end of the timed loop.
 */
export async function timeGpu(
  gpu: Gpu,
  encode: () => void,
  options: { warmup?: number; iterations?: number } = {},
): Promise<number> {
  const warmup = options.warmup ?? 1;
  const iterations = options.iterations ?? 3;
  for (let i = 0; i < warmup; i++) encode();
  await gpu.sync();
  const start = performance.now();
  for (let i = 0; i < iterations; i++) encode();
  await gpu.sync();
  return (performance.now() - start) / iterations;
}

/** Milliseconds per call of an async function (for tfjs and whole steps). */
export async function timeAsync(
  fn: () => Promise<void>,
  options: { warmup?: number; iterations?: number } = {},
): Promise<number> {
  const warmup = options.warmup ?? 1;
  const iterations = options.iterations ?? 3;
  for (let i = 0; i < warmup; i++) await fn();
  const start = performance.now();
  for (let i = 0; i < iterations; i++) await fn();
  return (performance.now() - start) / iterations;
}

/** A measurement from a time and an optional FLOP count. */
export function measure(ms: number, flops?: number): Measurement {
  return flops === undefined ? { ms } : { ms, gflops: flops / (ms * 1e6) };
}

/** Fill in `ratio` from the two times. */
export function withRatio(row: BenchRow): BenchRow {
  if (row.tfjs) row.ratio = row.tfjs.ms / row.ours.ms;
  return row;
}

function fmt(m: Measurement | undefined): string {
  if (!m) return "-";
  const extra = m.gflops !== undefined
    ? ` (${m.gflops.toFixed(2)} GFLOP/s)`
    : m.perSecond !== undefined
    ? ` (${m.perSecond.toFixed(1)}/s)`
    : "";
  return `${m.ms.toFixed(2)} ms${extra}`;
}

/**
 * A ratio as the table shows it: two decimals under 1 (PyTorch-peer ratios are checked against
 * 0.5x, and 0.45 must not read "0.5x"), one above.
 */
export function formatRatio(ratio: number): string {
  return `${ratio.toFixed(ratio < 1 ? 2 : 1)}x`;
}

/** A Markdown table of rows. */
export function formatTable(rows: BenchRow[]): string {
  const lines = [
    "| part | case | ours | tfjs-backend-webgpu | ours vs tfjs | note |",
    "|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const ratio = r.ratio === undefined ? "-" : formatRatio(r.ratio);
    lines.push(
      `| ${r.part} | ${r.case} | ${fmt(r.ours)} | ${fmt(r.tfjs)} | ${ratio} | ${r.note ?? ""} |`,
    );
  }
  return lines.join("\n");
}

/**
 * Per-call time is a batch's time / its calls, with many calls queued per wait for the device:
 * a wait costs ~11 ms on lavapipe whatever ran (fence polling), which one call per wait would
 * count as kernel time, and a training step queues hundreds of kernels per wait. Batches aim at
 * BATCH_TARGET_MS, so the wait is ~2% of a figure; each figure is the best of REPEATS batches (the
 * CPU adapter shares its cores); calls slower than SLOW_CALL_MS (tfjs's naive weight gradients)
 * are timed once.
 */
const BATCH_TARGET_MS = 500;
const REPEATS = 3;
const SLOW_CALL_MS = 2000;
/** Calls in the batch that estimates the per-call time. */
const PROBE_CALLS = 10;

/**
 * Milliseconds per call, given `timeBatch(calls)`: the wall time of `calls` calls queued with one
 * wait at the end (already warmed up). At most `maxCalls` per batch.
 */
export async function perCallMs(
  timeBatch: (calls: number) => Promise<number>,
  maxCalls: number,
): Promise<number> {
  const single = await timeBatch(1);
  if (single > SLOW_CALL_MS) return single;
  const probeCalls = Math.max(1, Math.min(maxCalls, PROBE_CALLS));
  const estimate = await timeBatch(probeCalls) / probeCalls;
  const calls = Math.max(1, Math.min(maxCalls, Math.round(BATCH_TARGET_MS / estimate)));
  let best = Infinity;
  for (let i = 0; i < REPEATS; i++) best = Math.min(best, await timeBatch(calls) / calls);
  return best;
}
