/**
 * Carrying out the plan: each run is a `tasks/train.ts` subprocess whose output goes to the
 * console and to train.log in its directory; experiment.json beside train.ts's files records
 * the flags it ran with, so a rerun skips finished runs, resumes interrupted ones from their
 * checkpoint and refuses a finished run made with other settings. `readRun` reads a run
 * directory back for the report.
 */
import { UserError } from "../cli.ts";
import { type RunMeasurements, sum } from "../../models/statistics.ts";
import { runDir, type RunSpec } from "./budgets.ts";

/** What the experiment writes into each run directory beside train.ts's files. */
export interface RunManifest {
  method: string;
  seed: number;
  trainArgs: string[];
  exitCode?: number;
  /** Wall time of the train.ts subprocesses (summed over resumes). */
  processSeconds: number;
  failure?: string;
}

const TRAIN_SCRIPT = new URL("../train.ts", import.meta.url).pathname;

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch {
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Lines of a child stream, each passed to `onLine`. */
async function forwardLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let pending = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    const lines = pending.split(/\r?\n|\r/);
    pending = lines.pop()!;
    for (const line of lines) onLine(line);
  }
  if (pending) onLine(pending);
}

export type RunOutcome = "done" | "skipped" | "failed" | "interrupted";

/** A run of the plan and what to do with it given what its directory already holds. */
export interface PlannedRun extends RunSpec {
  action: "skip" | "failed-before" | "resume" | "train";
  manifest?: RunManifest;
}

/**
 * Decide what a run needs: skip it (summary.json written with the same settings), report an
 * earlier failure, resume it from its checkpoint, or train it. A finished run made with other
 * settings stops the experiment before anything runs (it would otherwise be mixed in).
 */
export async function inspectRun(spec: RunSpec, retryFailed: boolean): Promise<PlannedRun> {
  const { dir, trainArgs } = spec;
  const manifest = await readJson<RunManifest>(`${dir}/experiment.json`);
  const sameSettings = manifest !== undefined &&
    JSON.stringify(manifest.trainArgs) === JSON.stringify(trainArgs);
  const plan: PlannedRun = { ...spec, action: "train", manifest };
  if (await exists(`${dir}/summary.json`)) {
    if (!sameSettings) {
      throw new UserError(
        `${dir} holds a finished run made with other settings (see its experiment.json); ` +
          "remove it or choose another --runs",
      );
    }
    plan.action = "skip";
  } else if (sameSettings && manifest!.failure !== undefined && !retryFailed) {
    plan.action = "failed-before";
  } else if (
    sameSettings && await exists(`${dir}/checkpoint.safetensors`) &&
    await exists(`${dir}/config.json`)
  ) {
    plan.action = "resume";
  }
  return plan;
}

/** A run with no optimizer steps only evaluates the untrained backbone. */
function evaluatesOnly(plan: PlannedRun): boolean {
  const steps = plan.trainArgs.indexOf("--steps");
  return steps >= 0 && plan.trainArgs[steps + 1] === "0";
}

/**
 * Runs planned runs one at a time; a SIGINT/SIGTERM to the experiment reaches the running
 * child (which checkpoints) and stops the rest.
 */
export class Runner {
  #child: Deno.ChildProcess | undefined;
  /** The signal that interrupted the experiment, if one did. */
  interruptedBy: Deno.Signal | undefined;
  #signals: [Deno.Signal, () => void][] = [];

  /** Forward SIGINT and SIGTERM to the running child until `close`. */
  listen(): void {
    const onSignal = (name: Deno.Signal) => () => {
      this.interruptedBy = name;
      // The child checkpoints on SIGINT/SIGTERM (a terminal's Ctrl-C reaches it directly too).
      try {
        this.#child?.kill(name);
      } catch {
        // already exited
      }
    };
    this.#signals = [["SIGINT", onSignal("SIGINT")], ["SIGTERM", onSignal("SIGTERM")]];
    for (const [sig, handler] of this.#signals) Deno.addSignalListener(sig, handler);
  }

  close(): void {
    for (const [sig, handler] of this.#signals) Deno.removeSignalListener(sig, handler);
    this.#signals = [];
  }

  /** Carry out a plan: train.ts as a subprocess, its output logged to train.log in the run. */
  async run(plan: PlannedRun): Promise<RunOutcome> {
    const { method, seed, dir, trainArgs } = plan;
    const tag = `[${method.id} seed ${seed}]`;
    const evaluation = evaluatesOnly(plan);
    if (plan.action === "skip") {
      console.log(`${tag} ${evaluation ? "evaluated" : "done"} before: ${dir}/summary.json`);
      return "skipped";
    }
    if (plan.action === "failed-before") {
      console.log(
        `${tag} failed before (${plan.manifest!.failure}); --retry-failed runs it again`,
      );
      return "failed";
    }
    const resume = plan.action === "resume";
    const manifestPath = `${dir}/experiment.json`;
    await Deno.mkdir(dir, { recursive: true });
    const record: RunManifest = {
      method: method.id,
      seed,
      trainArgs,
      processSeconds: resume ? plan.manifest!.processSeconds : 0,
    };
    await Deno.writeTextFile(manifestPath, JSON.stringify(record, null, 1) + "\n");
    const args = [
      "run",
      "-A",
      "--unstable-webgpu",
      TRAIN_SCRIPT,
      // The run directory holds this runner's manifest and log, so a fresh run overwrites it;
      // the end-of-run pictures are left out (the report plots kNN curves instead).
      ...(resume ? ["--resume", dir] : [...trainArgs, "--overwrite"]),
      "--no-pictures",
    ];
    const doing = resume
      ? "resuming"
      : evaluation
      ? "evaluating the untrained backbone"
      : "training";
    console.log(
      `${tag} ${doing}: train.ts ${resume ? `--resume ${dir}` : trainArgs.join(" ")}`,
    );
    const log = await Deno.open(`${dir}/train.log`, { create: true, append: true });
    const encoder = new TextEncoder();
    const tail: string[] = [];
    const onLine = (line: string) => {
      log.writeSync(encoder.encode(line + "\n"));
      tail.push(line);
      if (tail.length > 20) tail.shift();
      // Feature-extraction progress is in train.log; the console gets the rest.
      if (!/features \((train|test)\)|linear probe 0\/1/.test(line)) console.log(`${tag} ${line}`);
    };
    const started = performance.now();
    const child = new Deno.Command(Deno.execPath(), {
      args,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    await Promise.all([forwardLines(child.stdout, onLine), forwardLines(child.stderr, onLine)]);
    const status = await child.status;
    this.#child = undefined;
    log.close();
    record.exitCode = status.code;
    record.processSeconds += (performance.now() - started) / 1000;
    record.processSeconds = +record.processSeconds.toFixed(1);
    let outcome: RunOutcome = "done";
    if (status.code === 130 || this.interruptedBy !== undefined) {
      outcome = "interrupted";
    } else if (status.code !== 0 || !(await exists(`${dir}/summary.json`))) {
      const reason = tail.filter((l) => /error/i.test(l)).at(-1) ?? `exit code ${status.code}`;
      record.failure = reason.trim();
      outcome = "failed";
      console.log(`${tag} failed: ${record.failure} (log: ${dir}/train.log)`);
    }
    await Deno.writeTextFile(manifestPath, JSON.stringify(record, null, 1) + "\n");
    return outcome;
  }
}

/** One evaluation of one run. */
export interface EvalPoint {
  step: number;
  knnTop1: number;
  linearTop1: number | null;
}

/** Everything the report needs about one run. */
export interface RunRecord extends RunMeasurements {
  method: string;
  seed: number;
  dir: string;
  status: "done" | "failed" | "missing";
  evals: EvalPoint[];
  /** Training time: summary.wallSeconds less the intermediate evaluations. */
  trainSeconds?: number;
  adapter?: string;
  failure?: string;
}

/** Read a run directory (summary.json, metrics.jsonl, experiment.json). */
export async function readRun(runs: string, method: string, seed: number): Promise<RunRecord> {
  const dir = runDir(runs, method, seed);
  const manifest = await readJson<RunManifest>(`${dir}/experiment.json`);
  const summary = await readJson<Record<string, unknown>>(`${dir}/summary.json`);
  const record: RunRecord = { method, seed, dir, status: "missing", evals: [] };
  if (!summary) {
    if (manifest?.failure) {
      record.status = "failed";
      record.failure = manifest.failure;
    }
    return record;
  }
  const text = await Deno.readTextFile(`${dir}/metrics.jsonl`).catch(() => "");
  const byStep = new Map<number, EvalPoint>();
  const intermediateEvalSeconds: number[] = [];
  for (const line of text.split("\n")) {
    let m: Record<string, number | null>;
    try {
      m = JSON.parse(line);
    } catch {
      continue; // blank, or a line cut short by an interruption
    }
    if (typeof m.knnTop1 !== "number") continue;
    byStep.set(m.step as number, {
      step: m.step as number,
      knnTop1: m.knnTop1,
      linearTop1: typeof m.linearTop1 === "number" ? m.linearTop1 : null,
    });
    if ((m.step as number) < (summary.steps as number)) {
      intermediateEvalSeconds.push((m.evalSeconds as number) ?? 0);
    }
  }
  record.status = "done";
  record.evals = [...byStep.values()].sort((a, b) => a.step - b.step);
  record.finalKnn = summary.knnTop1 as number;
  record.finalLinear = (summary.linearTop1 as number | null) ?? null;
  record.trainSeconds = (summary.wallSeconds as number) - sum(intermediateEvalSeconds);
  record.processSeconds = manifest?.processSeconds;
  record.imagesPerSecond = (summary.imagesPerSecond as number | null) ?? null;
  record.adapter = summary.adapter as string | undefined;
  return record;
}
