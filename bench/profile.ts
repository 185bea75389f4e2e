/**
 * Per-kernel time breakdown of the GPU work encoded between `start` and `stop`.
 *
 * Two ways to measure (`auto` picks timestamps when the device has them):
 * - `timestamps` (when the device has "timestamp-query"): every compute pass gets a begin and an
 *   end timestamp through `Gpu.onDispatch`; the queries are resolved and read back once, in
 *   `stop`. The work runs exactly as it would unprofiled (same submits, no extra waits).
 * - `sync-replay` (the fallback): the dispatches are recorded while the work runs normally, then
 *   `stop` replays each one alone with a `gpu.sync()` before and after it and takes the wall time.
 *   Each figure includes one submit and one wait (a fixed latency per dispatch), and the replay
 *   runs the kernels a second time, so in-place updates (optimizer steps, accumulating gradients)
 *   are applied twice: use it on throwaway state only.
 * Each dispatch is attributed to its kernel (`<file>:<entry point>`) and to the kernel wrapper
 * that issued it (the outermost function in `kernels/` on the call stack, e.g. `conv2dForward`
 * vs `conv2dWeightGrad`, which share the `conv2d:main` entry point).
 */
import type { DispatchArgs, Gpu, Kernel } from "../runtime/gpu.ts";
import type { BenchRow } from "./harness.ts";

/** How kernel times are measured. */
export type ProfileMode = "timestamps" | "sync-replay";

/** One kernel's share of the profiled work. */
export interface KernelTime {
  /** The kernel's name, `<file>:<entry point>`. */
  kernel: string;
  /** The kernel wrapper that dispatched it (e.g. `conv2dInputGrad`). */
  caller: string;
  /** Dispatches of it. */
  calls: number;
  /** Milliseconds over all its dispatches. */
  totalMs: number;
  /** Fraction of the summed time of all kernels (0..1). */
  share: number;
}

/** A finished profile: the mode used and the kernels, slowest total first. */
export interface ProfileReport {
  mode: ProfileMode;
  /** Sum of every kernel's time (ms). */
  kernelMs: number;
  rows: KernelTime[];
}

/** A benchmark row that carries the profile of the work it timed (`tasks/bench.ts` prints it). */
export interface ProfiledRow extends BenchRow {
  profile: ProfileReport;
}

/** Whether a benchmark row carries a profile. */
export function hasProfile(row: BenchRow): row is ProfiledRow {
  return "profile" in row && (row as ProfiledRow).profile !== undefined;
}

/** WebGPU allows at most 4096 queries in one query set: two per pass. */
const QUERIES_PER_SET = 4096;
const PASSES_PER_SET = QUERIES_PER_SET / 2;

interface RecordedDispatch {
  kernel: Kernel;
  args: DispatchArgs;
}

/** Which kernel ran and which wrapper dispatched it. */
interface DispatchOrigin {
  kernel: string;
  caller: string;
}

const KERNELS_DIR = new URL("../kernels/", import.meta.url).href;
const RUNTIME_FILE = new URL("../runtime/gpu.ts", import.meta.url).href;
const STACK_FRAME = /^\s*at (?:async )?(?:(.+?) \()?(.+?):\d+:\d+\)?$/;

/**
 * The outermost function of the `kernels/` frames right above the dispatch (the public wrapper,
 * not its private helpers), or the first function outside this file and the runtime when the
 * dispatch came from elsewhere.
 */
function callerOfDispatch(): string {
  const frames = (new Error().stack ?? "").split("\n").slice(1).map((line) => {
    const match = STACK_FRAME.exec(line);
    return { name: match?.[1] ?? "<anonymous>", file: match?.[2] ?? "" };
  });
  const outside = frames.filter((f) => f.file !== import.meta.url && f.file !== RUNTIME_FILE);
  let caller: string | undefined;
  for (const frame of outside) {
    if (!frame.file.startsWith(KERNELS_DIR)) break;
    caller = frame.name;
  }
  return caller ?? outside[0]?.name ?? "<unknown>";
}

/** Collects per-kernel GPU times of everything dispatched between `start` and `stop`. */
export class KernelProfiler {
  private mode: ProfileMode = "timestamps";
  private gpu: Gpu | undefined;
  private origins: DispatchOrigin[] = [];
  private querySets: GPUQuerySet[] = [];
  private recorded: RecordedDispatch[] = [];

  /** `auto` (default) takes timestamps when the device supports them, else the sync replay. */
  constructor(readonly requestedMode: ProfileMode | "auto" = "auto") {}

  /** Begin recording every dispatch of `gpu` (work encoded before this is not counted). */
  start(gpu: Gpu): void {
    if (this.gpu) throw new Error("KernelProfiler: already started");
    if (gpu.onDispatch) throw new Error("KernelProfiler: another Gpu.onDispatch hook is set");
    if (this.requestedMode === "timestamps" && !gpu.hasTimestamps) {
      throw new Error(
        'KernelProfiler: this device lacks the "timestamp-query" feature; use mode "sync-replay"',
      );
    }
    this.mode = this.requestedMode === "auto"
      ? (gpu.hasTimestamps ? "timestamps" : "sync-replay")
      : this.requestedMode;
    this.gpu = gpu;
    this.origins = [];
    this.recorded = [];
    if (this.mode === "timestamps") {
      gpu.onDispatch = (name, pass) => {
        this.addTimestampWrites(gpu, pass);
        this.origins.push({ kernel: name, caller: callerOfDispatch() });
      };
    } else {
      const dispatch = gpu.dispatch;
      // Record a copy of each dispatch (uniform bytes included: the caller may reuse its array)
      // and run it as usual; `stop` replays the copies one at a time.
      gpu.dispatch = (kernel: Kernel, args: DispatchArgs) => {
        this.recorded.push({ kernel, args: copyArgs(args) });
        this.origins.push({ kernel: kernel.name, caller: callerOfDispatch() });
        dispatch.call(gpu, kernel, args);
      };
    }
  }

  /** Stop recording and return the per-kernel times, slowest total first. */
  async stop(): Promise<ProfileReport> {
    const gpu = this.gpu;
    if (!gpu) throw new Error("KernelProfiler: stop without start");
    this.gpu = undefined;
    const perDispatchMs = this.mode === "timestamps"
      ? await this.readTimestamps(gpu)
      : await this.replayWithSyncs(gpu);
    return summarise(this.mode, this.origins, perDispatchMs);
  }

  private addTimestampWrites(gpu: Gpu, pass: GPUComputePassDescriptor): void {
    const index = this.origins.length;
    const set = Math.floor(index / PASSES_PER_SET);
    if (set === this.querySets.length) {
      this.querySets.push(
        gpu.device.createQuerySet({ type: "timestamp", count: QUERIES_PER_SET }),
      );
    }
    const slot = (index % PASSES_PER_SET) * 2;
    pass.timestampWrites = {
      querySet: this.querySets[set],
      beginningOfPassWriteIndex: slot,
      endOfPassWriteIndex: slot + 1,
    };
  }

  /** Resolve every used query into one buffer, read it back once, end - begin per pass. */
  private async readTimestamps(gpu: Gpu): Promise<number[]> {
    gpu.onDispatch = undefined;
    const passes = this.origins.length;
    if (passes === 0) return [];
    const setBytes = QUERIES_PER_SET * 8;
    const usedSets = Math.ceil(passes / PASSES_PER_SET);
    const resolved = gpu.device.createBuffer({
      size: usedSets * setBytes,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const staging = gpu.device.createBuffer({
      size: usedSets * setBytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = gpu.currentEncoder();
    for (let s = 0; s < usedSets; s++) {
      const queries = 2 * Math.min(PASSES_PER_SET, passes - s * PASSES_PER_SET);
      encoder.resolveQuerySet(this.querySets[s], 0, queries, resolved, s * setBytes);
    }
    encoder.copyBufferToBuffer(resolved, 0, staging, 0, usedSets * setBytes);
    gpu.flush();
    await staging.mapAsync(GPUMapMode.READ);
    const ticks = new BigUint64Array(staging.getMappedRange().slice(0));
    staging.unmap();
    for (const b of [staging, resolved, ...this.querySets]) b.destroy();
    this.querySets = [];
    const ms: number[] = [];
    for (let i = 0; i < passes; i++) {
      const base = Math.floor(i / PASSES_PER_SET) * QUERIES_PER_SET + (i % PASSES_PER_SET) * 2;
      // Resolved timestamps are nanoseconds; a pass whose end reads before its begin (a clock
      // that is not monotonic across queues) counts as zero rather than as a huge number.
      const begin = ticks[base];
      const end = ticks[base + 1];
      ms.push(end > begin ? Number(end - begin) / 1e6 : 0);
    }
    return ms;
  }

  /** Run each recorded dispatch again, alone, between two waits for the GPU. */
  private async replayWithSyncs(gpu: Gpu): Promise<number[]> {
    Reflect.deleteProperty(gpu, "dispatch"); // back to Gpu.prototype.dispatch
    await gpu.sync();
    const ms: number[] = [];
    for (const { kernel, args } of this.recorded) {
      const begin = performance.now();
      gpu.dispatch(kernel, args);
      await gpu.sync();
      ms.push(performance.now() - begin);
    }
    this.recorded = [];
    return ms;
  }
}

function copyArgs(args: DispatchArgs): DispatchArgs {
  const uniforms = args.uniforms === undefined
    ? undefined
    : args.uniforms instanceof ArrayBuffer
    ? args.uniforms.slice(0)
    : new Uint8Array(args.uniforms.buffer, args.uniforms.byteOffset, args.uniforms.byteLength)
      .slice();
  return { uniforms, storage: [...args.storage], workgroups: [...args.workgroups] };
}

function summarise(mode: ProfileMode, origins: DispatchOrigin[], ms: number[]): ProfileReport {
  const groups = new Map<string, KernelTime>();
  origins.forEach(({ kernel, caller }, i) => {
    const key = `${kernel}\u0000${caller}`;
    const row = groups.get(key) ?? { kernel, caller, calls: 0, totalMs: 0, share: 0 };
    row.calls++;
    row.totalMs += ms[i];
    groups.set(key, row);
  });
  const kernelMs = ms.reduce((a, b) => a + b, 0);
  const rows = [...groups.values()];
  for (const row of rows) row.share = kernelMs > 0 ? row.totalMs / kernelMs : 0;
  rows.sort((a, b) =>
    b.totalMs - a.totalMs || a.kernel.localeCompare(b.kernel) || a.caller.localeCompare(b.caller)
  );
  return { mode, kernelMs, rows };
}

/** What each mode's figures mean, for the table's caption. */
export function describeMode(mode: ProfileMode): string {
  return mode === "timestamps"
    ? "GPU timestamp queries at the begin and end of each compute pass"
    : "wall time of each dispatch replayed alone between two gpu.sync() calls " +
      "(includes a fixed submit-and-wait latency per dispatch)";
}

/** A Markdown table of a profile: kernel, wrapper, calls, total ms, share, ms per call. */
export function formatProfile(report: ProfileReport, title = "kernel profile"): string {
  const lines = [
    `${title}: ${report.kernelMs.toFixed(1)} ms in kernels, measured by ${
      describeMode(report.mode)
    }`,
    "",
    "| kernel | dispatched by | calls | total ms | share | ms per call |",
    "|---|---|---:|---:|---:|---:|",
  ];
  for (const r of report.rows) {
    lines.push(
      `| ${r.kernel} | ${r.caller} | ${r.calls} | ${r.totalMs.toFixed(2)} | ${
        (100 * r.share).toFixed(1)
      }% | ${(r.totalMs / r.calls).toFixed(3)} |`,
    );
  }
  return lines.join("\n");
}
