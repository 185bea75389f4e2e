/**
 * `deno task bench [part ...] [--quick] [--no-tfjs] [--kernel-plan KIND] [--json] [--report FILE]`
 *
 * Runs benchmark parts (matmul, conv, batchnorm, loss, data, step; default: all) on the WebGPU
 * adapter, each next to the same work in tfjs-backend-webgpu on the same adapter, prints the
 * side-by-side table and writes it to BENCHMARKS.md (or --report FILE).
 */
import { parseArgs } from "node:util";
import { acquireGpu } from "../runtime/gpu.ts";
import { type BenchContext, type BenchRow, formatTable } from "../bench/harness.ts";
import { formatProfile, hasProfile } from "../bench/profile.ts";
import { PRESETS } from "./presets.ts";
import { kernelPlanSetting, runMain, UserError } from "./cli.ts";

const PARTS = ["matmul", "conv", "batchnorm", "loss", "data", "step"] as const;

const HELP = `usage: deno task bench [${PARTS.join("|")} ...] [flags]
  --quick          fewer, smaller cases
  --no-tfjs        skip the tfjs-backend-webgpu comparison
  --profile        (step) per-kernel time breakdown of one reference and one SSL step
  --kernel-plan K  kernel tiles for: auto (by adapter) | gpu | cpu (default: env
                   TRITRAIN_KERNEL_PLAN, else auto); the report names the plans run
  --json           print rows as JSON instead of a table
  --report FILE    write the Markdown report here (default BENCHMARKS.md; "-" to skip)`;

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: Deno.args,
      allowPositionals: true,
      options: {
        quick: { type: "boolean", default: false },
        "no-tfjs": { type: "boolean", default: false },
        profile: { type: "boolean", default: false },
        "kernel-plan": { type: "string" },
        json: { type: "boolean", default: false },
        report: { type: "string", default: "BENCHMARKS.md" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    throw new UserError(`${(e as Error).message}\n${HELP}`);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const unknown = positionals.filter((p) => !(PARTS as readonly string[]).includes(p));
  if (unknown.length > 0) {
    throw new UserError(
      `unknown benchmark part ${unknown.join(", ")}: choose from ${PARTS.join(", ")}`,
    );
  }
  const parts = positionals.length > 0 ? positionals : [...PARTS];
  const kernelPlan = kernelPlanSetting(values["kernel-plan"]);
  const gpu = await acquireGpu();
  gpu.settings.plan = kernelPlan;
  if (!values.json) console.log(gpu.describe());
  const ctx: BenchContext = {
    gpu,
    quick: values.quick,
    withTfjs: !values["no-tfjs"],
    flags: { profile: values.profile },
    preset: PRESETS.small,
  };
  const rows: BenchRow[] = [];
  for (const part of parts) {
    const module = await import(`../bench/${part}.ts`);
    const partRows: BenchRow[] = await module.run(ctx);
    rows.push(...partRows);
    if (!values.json) {
      console.log(`\n${formatTable(partRows)}`);
      // A part run with --profile returns a row carrying its per-kernel breakdown (--json keeps it).
      for (const row of partRows.filter(hasProfile)) {
        console.log(`\n${formatProfile(row.profile, `${row.part}: ${row.case}`)}`);
      }
    }
  }
  if (values.json) console.log(JSON.stringify(rows, null, 1));
  if (values.report !== "-") await writeReport(values.report, parts, rows, gpu.describe());
  return 0;
}

async function writeReport(
  path: string,
  parts: string[],
  rows: BenchRow[],
  adapter: string,
): Promise<void> {
  const cpu = await cpuName();
  const section = [
    `## ${parts.join(", ")} (${new Date().toISOString().slice(0, 10)})`,
    "",
    `Machine: ${cpu}, ${navigator.hardwareConcurrency} cores; ${adapter}.`,
    "",
    formatTable(rows),
    "",
  ].join("\n");
  let existing = "";
  try {
    existing = await Deno.readTextFile(path);
  } catch {
    existing = "# Benchmarks\n\nWritten by `deno task bench`; newest sections first.\n\n";
  }
  const [head, ...rest] = existing.split(/\n(?=## )/);
  await Deno.writeTextFile(path, [head.trimEnd() + "\n", section, ...rest].join("\n"));
  console.log(`\nwrote ${path}`);
}

async function cpuName(): Promise<string> {
  try {
    const info = await Deno.readTextFile("/proc/cpuinfo");
    return info.match(/model name\s*:\s*(.+)/)?.[1] ?? "unknown CPU";
  } catch {
    return "unknown CPU";
  }
}

if (import.meta.main) runMain("bench", main);
