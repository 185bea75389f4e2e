/**
 * The kernel profile's reporting: a benchmark row carrying a profile, and the Markdown table.
 * The profiler itself (`KernelProfiler`) lives in `runtime/profiler.ts`.
 */
import type { ProfileMode, ProfileReport } from "../runtime/profiler.ts";
import type { BenchRow } from "./harness.ts";

/** A benchmark row that carries the profile of the work it timed (`tasks/bench.ts` prints it). */
export interface ProfiledRow extends BenchRow {
  profile: ProfileReport;
}

/** Whether a benchmark row carries a profile. */
export function hasProfile(row: BenchRow): row is ProfiledRow {
  return "profile" in row && (row as ProfiledRow).profile !== undefined;
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
