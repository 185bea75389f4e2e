/**
 * Per-kernel time breakdown of the GPU work encoded between `start` and `stop`.
 *
 * Two ways to measure (`auto` picks timestamps when the device has them):
 * - `timestamps` (when the device has "timestamp-query"): every compute pass gets a begin and an
 *   end timestamp through a dispatch observer (`Gpu.observeDispatches`); the queries are
 *   resolved and read back once, in `stop`. The work runs exactly as it would unprofiled (same submits, no extra waits).
 * - `sync-replay` (the fallback): a dispatch observer records the dispatches while the work runs
 *   normally, then
 *   `stop` replays each one alone with a `gpu.sync()` before and after it and takes the wall time.
 *   Each figure includes one submit and one wait (a fixed latency per dispatch), and the replay
 *   runs the kernels a second time, so in-place updates (optimizer steps, accumulating gradients)
 *   are applied twice: use it on throwaway state only.
 * Each dispatch is attributed to its kernel (`<file>:<entry point>`) and to the kernel wrapper
 * that issued it (the outermost function in `kernels/` on the call stack, e.g. `conv2dForward`
 * vs `conv2dWeightGrad`, which share the `conv2d:main` entry point). The report's table lives in
 * `bench/profile.ts`.
 */
import type { DispatchArgs, Gpu } from "./device.ts";
import type { Kernel } from "./shader.ts";

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
const RUNTIME_DIR = new URL("./", import.meta.url).href;
const STACK_FRAME = /^\s*at (?:async )?(?:(.+?) \()?(.+?):\d+:\d+\)?$/;

/**
 * The outermost function of the `kernels/` frames right above the dispatch (the public wrapper,
 * not its private helpers), or the first function outside the runtime when the dispatch came from
 * elsewhere.
 */
function callerOfDispatch(): string {
  const frames = (new Error().stack ?? "").split("\n").slice(1).map((line) => {
    const match = STACK_FRAME.exec(line);
    return { name: match?.[1] ?? "<anonymous>", file: match?.[2] ?? "" };
  });
  const outside = frames.filter((f) => !f.file.startsWith(RUNTIME_DIR));
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
  private unsubscribe: (() => void) | undefined;

  /** `auto` (default) takes timestamps when the device supports them, else the sync replay. */
  constructor(readonly requestedMode: ProfileMode | "auto" = "auto") {}

  /** Begin recording every dispatch of `gpu` (work encoded before this is not counted). */
  start(gpu: Gpu): void {
    if (this.gpu) throw new Error("KernelProfiler: already started");
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
    const timestamps = this.mode === "timestamps";
    this.unsubscribe = gpu.observeDispatches(({ kernel, args, pass }) => {
      if (timestamps) {
        this.addTimestampWrites(gpu, pass);
      } else {
        // Keep a copy (uniform bytes included: the caller may reuse its array); `stop` replays
        // the copies one at a time.
        this.recorded.push({ kernel, args: copyArgs(args) });
      }
      this.origins.push({ kernel: kernel.name, caller: callerOfDispatch() });
    });
  }

  /** Stop recording and return the per-kernel times, slowest total first. */
  async stop(): Promise<ProfileReport> {
    const gpu = this.gpu;
    if (!gpu) throw new Error("KernelProfiler: stop without start");
    this.gpu = undefined;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
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
  return { uniforms, storage: { ...args.storage }, workgroups: [...args.workgroups] };
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
