/**
 * The experiment's Markdown report and plot, built only from their inputs (no file access):
 * setup, results table, Bernoulli false-negative analysis, a discussion generated from the
 * numbers, the hand-written commentary kept between markers, and the per-run table. The
 * statistics come from models/statistics.ts; this module words them.
 */
import type { DatasetName } from "../../data/dataset.ts";
import {
  compareStats,
  describe,
  falseNegativeTable,
  type SeedSummary,
  type Stat,
  sum,
  summarizeSeeds,
} from "../../models/statistics.ts";
import { type CurvePoint, renderCurves } from "../plot.ts";
import {
  type Budget,
  CALIBRATED_INIT,
  CALIBRATION_STEPS,
  FALSE_NEGATIVE_EPSILON,
  type Method,
  RELEASED_WINDOW,
} from "./budgets.ts";
import type { RunRecord } from "./runner.ts";

/** How the report names each dataset in prose. */
export const DATASET_LABELS: Record<DatasetName, string> = {
  "fashion-mnist": "Fashion-MNIST",
  mnist: "MNIST",
  cifar10: "CIFAR-10",
  cifar100: "CIFAR-100",
  folder: "an image folder",
};

/** One seed of the first random-init baseline (the untrained backbone, statistics as initialised). */
export interface InitResult {
  seed: number;
  knnTop1: number;
  linearTop1: number | null;
  seconds?: number;
  dir?: string;
}

/** The report's inputs. */
export interface ReportInput {
  budget: Budget;
  mode: "default" | "quick";
  /** Budget fields that flags changed from the preset. */
  overrides: string[];
  /** The learning rate the runs used (resolved by train.ts). */
  lr: number;
  methods: Method[];
  runs: RunRecord[];
  randomInit: InitResult[];
  /** The untrained weights with estimated BatchNorm statistics (runs of CALIBRATED_INIT). */
  calibratedInit?: RunRecord[];
  /** Balanced classes of the dataset (Bernoulli analysis). */
  classes: number;
  /** Images in the dataset's training split (epochs). */
  trainImages: number;
  command: string;
  plotFile: string;
  /** Text kept from a previous report between the commentary markers. */
  commentary?: string;
}

export const COMMENTARY_START =
  "<!-- commentary:start (hand-written; kept when the report is regenerated) -->";
export const COMMENTARY_END = "<!-- commentary:end -->";
/** The placeholder's opening: a commentary that still holds it is not kept. */
const PLACEHOLDER_START = "_Lead: hand-written interpretation goes here";
const COMMENTARY_PLACEHOLDER = `${PLACEHOLDER_START} (kept when the report is regenerated)._`;

/** The hand-written commentary of a previous report (undefined: none, or the placeholder). */
export function keptCommentary(previousReport: string): string | undefined {
  const start = previousReport.indexOf(COMMENTARY_START);
  const end = previousReport.indexOf(COMMENTARY_END);
  const commentary = start >= 0 && end > start
    ? previousReport.slice(start + COMMENTARY_START.length, end)
    : undefined;
  return commentary?.includes(PLACEHOLDER_START) ? undefined : commentary;
}

function pct(fraction: number): string {
  return (100 * fraction).toFixed(1);
}

/** "a ± s" in percent (the spread only with two or more seeds). */
function cell(stat: Stat | undefined): string {
  if (!stat) return "—";
  return stat.n > 1 ? `${pct(stat.mean)} ± ${pct(stat.std)}` : pct(stat.mean);
}

function minutes(seconds: number): string {
  return `${(seconds / 60).toFixed(1)} min`;
}

function secondsCell(stat: Stat | undefined): string {
  if (!stat) return "—";
  return stat.n > 1 ? `${stat.mean.toFixed(0)} ± ${stat.std.toFixed(0)}` : stat.mean.toFixed(0);
}

/** Per-method statistics over seeds. */
interface MethodResult extends SeedSummary {
  method: Method;
  runs: RunRecord[];
}

function aggregate(method: Method, runs: RunRecord[]): MethodResult {
  return { method, runs, ...summarizeSeeds(runs.filter((r) => r.status === "done")) };
}

/** Neutral comparison of two statistics (percent points), with the seed spread. */
function compare(aLabel: string, a: Stat, bLabel: string, b: Stat): string {
  const { gap, spread, gapExceedsSpread, rangesOverlap } = compareStats(a, b);
  const shown = Math.abs(100 * gap).toFixed(1);
  const relation = shown === "0.0"
    ? "level (to 0.1 points) with"
    : `${shown} points ${gap > 0 ? "above" : "below"}`;
  let text = `${aLabel} (${pct(a.mean)}%) is ${relation} ${bLabel} (${pct(b.mean)}%)`;
  if (spread === undefined) {
    text +=
      "; with a single seed the seed spread is unknown, so the gap cannot be judged against it";
  } else {
    text += `; the gap is ${gapExceedsSpread ? "larger" : "not larger"} than the seed spread ` +
      `(the larger standard deviation of the two, ${pct(spread)} points), and the ` +
      `min-max ranges over seeds ${rangesOverlap ? "overlap" : "do not overlap"}`;
  }
  return text;
}

/** The Bernoulli false-negative analysis for the batch and classes used (computed). */
function bernoulliSection(classes: number, batch: number): string[] {
  const table = falseNegativeTable(classes, batch, FALSE_NEGATIVE_EPSILON, RELEASED_WINDOW);
  const { negatives, k, window } = table;
  return [
    "## Bernoulli analysis: how many negatives are false?",
    "",
    `With ${classes} balanced classes, each of a query's ${negatives} negatives in a batch of ` +
    `${batch} shares its class with probability 1/${classes}, so the number X of same-class ` +
    `(false) negatives per row is Binomial(${negatives}, ${
      table.sameClassProbability.toFixed(3)
    }): **E[X] = ${table.expected.toFixed(2)}** per row. If the encoder ranks same-class ` +
    "images nearest (what training aims for), the rank-k deputy is a false negative exactly " +
    "when X >= k:",
    "",
    "| rank k | P(X >= k) |",
    "|---:|---:|",
    ...table.ranks.map(({ rank, tail }) =>
      `| ${rank}${rank >= window[0] && rank <= window[1] ? ` (in [${RELEASED_WINDOW}])` : ""}${
        rank === k ? " (bernoulliK)" : ""
      } | ${tail.toFixed(4)} |`
    ),
    "",
    `Averaged over the ranks of the [${window}] window, P(X >= k) = ${
      table.windowMeanTail.toFixed(3)
    }: ` +
    (table.windowMeanTail > 0.5
      ? "under that assumption most deputies the released window picks on this data are false " +
        "negatives (same-class images pushed apart)."
      : "under that assumption most deputies the released window picks on this data are true " +
        "negatives."),
    k !== undefined
      ? `bernoulliK(${classes}, ${batch}, ${FALSE_NEGATIVE_EPSILON}) = ${k}: the smallest rank whose ` +
        `deputy is a false negative with probability <= ${FALSE_NEGATIVE_EPSILON} ` +
        `(P(X >= ${k}) = ${table.kTail!.toFixed(4)}). The "rank-k, k=${k}" run tests ` +
        "this prediction against rank-k, k=2."
      : `No rank up to ${negatives} has P(X >= k) <= ${FALSE_NEGATIVE_EPSILON} at this batch.`,
    "",
  ];
}

/** The Markdown report (pure: everything comes from `input`). */
export function buildReport(input: ReportInput): string {
  const { budget, methods } = input;
  const results = methods.map((m) => aggregate(m, input.runs.filter((r) => r.method === m.id)));
  const init = describe(input.randomInit.map((r) => r.knnTop1));
  const initLinear = describe(
    input.randomInit.map((r) => r.linearTop1).filter((v): v is number => v !== null),
  );
  const evalSteps = [...new Set(results.flatMap((r) => [...r.knnAt.keys()]))].sort((a, b) => a - b);
  const finished = input.runs.filter((r) => r.status === "done").length;
  const failed = input.runs.filter((r) => r.status === "failed");
  const adapters = [...new Set(input.runs.map((r) => r.adapter).filter(Boolean))];
  const epochs = budget.steps * budget.batch / input.trainImages;
  const out: string[] = [
    "# Experiment: does truncated triplet learn faster?",
    "",
    "Generated by `tasks/experiment.ts`; every number and every sentence outside the commentary " +
    "section comes from the runs (regenerating the report rewrites them).",
    "",
    "The claim tested (Wang et al., ICCV 2021): at equal epochs the truncated triplet loss " +
    "reaches a better representation than BYOL and SimCLR (InfoNCE). Here at small scale: " +
    `${DATASET_LABELS[budget.dataset]}, every method with the same backbone, batch, seed, ` +
    "augmentations and number of steps.",
    "",
    "## Setup",
    "",
    `- Budget: the ${input.mode === "quick" ? "`--quick`" : "default"} preset` +
    (input.overrides.length ? ` with ${input.overrides.join(", ")} changed by flags` : "") +
    ` — ResNet-18 (small-image stem) widths ${budget.widths.join("/")}, batch ${budget.batch}, ` +
    `${budget.steps} steps (${epochs.toFixed(3)} epochs of the ${
      input.trainImages.toLocaleString("en")
    } training images), ` +
    `base learning rate ${+input.lr.toPrecision(4)} (LARS, warm-up and cosine schedule of the ` +
    "small preset), " +
    `${budget.seeds} seed${budget.seeds > 1 ? "s" : ""} (0..${budget.seeds - 1}).`,
    `- Evaluation: kNN monitor (k = 200, cosine, temperature 0.1) ` +
    (budget.evalEvery > 0 ? `every ${budget.evalEvery} steps and ` : "") +
    `at the end, linear probe (${budget.probeEpochs} epochs) at the end only ` +
    "(train.ts runs the probe only at the final evaluation); bank and probe training set: " +
    `${budget.evalBank} training images (a seeded subset), test: the first ${budget.evalTest} test images.`,
    `- Runs: ${finished} of ${methods.length * budget.seeds} finished` +
    (failed.length ? `, ${failed.length} failed` : "") +
    (adapters.length ? `; adapter: ${adapters.join(", ")}` : "") + ".",
    `- Time: ${minutes(sum(input.runs.map((r) => r.processSeconds ?? 0)))} in ` +
    `train.ts subprocesses, ${
      minutes(
        sum(input.randomInit.map((r) => r.seconds ?? 0)) +
          sum((input.calibratedInit ?? []).map((r) => r.processSeconds ?? 0)),
      )
    } ` +
    "for the two random-init baselines.",
    "- Reproduce:",
    "",
    "```sh",
    input.command,
    "```",
    "",
    "## Results",
    "",
    `Top-1 accuracy in %, mean ± sample standard deviation over seeds (a single number: one seed). ` +
    "Every method starts from the same initialisation for a given seed, so the random-init row " +
    "is each curve's step 0. Train time: the training steps (pipeline compilation included, " +
    "evaluations excluded); process: the whole train.ts subprocess. Two random-init rows: " +
    '"random init" keeps the BatchNorm running statistics as initialised (mean 0, variance 1: ' +
    'what `deno task eval` of an untrained checkpoint measures); "' + CALIBRATED_INIT.label +
    `" has the same weights after ${CALIBRATION_STEPS} train.ts steps at learning rate 0, so its ` +
    "statistics come from training batches like every trained run's.",
    "",
  ];
  // Step 0 is the random init: every method starts from it, so it gets one row of its own.
  const header = [
    "method",
    "kNN @ 0",
    ...evalSteps.map((s) => `kNN @ ${s}`),
    "linear (end)",
    "train s",
    "process s",
    "img/s",
    "seeds",
  ];
  out.push(`| ${header.join(" | ")} |`);
  out.push(`|${header.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`);
  out.push(
    `| random init | ${[cell(init), ...evalSteps.map(() => "—"), cell(initLinear)].join(" | ")} ` +
      `| — | — | — | ${input.randomInit.length} |`,
  );
  const calibrated = (input.calibratedInit ?? []).filter((r) => r.status === "done");
  const calibratedKnn = describe(calibrated.map((r) => r.finalKnn!));
  const calibratedLinear = describe(
    calibrated.map((r) => r.finalLinear).filter((v): v is number => typeof v === "number"),
  );
  if (calibratedKnn) {
    out.push(
      `| ${CALIBRATED_INIT.label} | ${
        [cell(calibratedKnn), ...evalSteps.map(() => "—"), cell(calibratedLinear)].join(" | ")
      } | — | — | — | ${calibrated.length} |`,
    );
  }
  for (const r of results) {
    out.push(
      `| ${r.method.label} | (init) | ${
        evalSteps.map((s) => cell(r.knnAt.get(s))).join(" | ")
      } | ` +
        `${cell(r.finalLinear)} | ${secondsCell(r.trainSeconds)} | ${
          secondsCell(r.processSeconds)
        } | ` +
        `${r.imagesPerSecond ? r.imagesPerSecond.mean.toFixed(1) : "—"} | ` +
        `${r.runs.filter((x) => x.status === "done").length} |`,
    );
  }
  out.push("");
  out.push(
    `![kNN top-1 against optimizer steps, mean over seeds](${input.plotFile})`,
    "",
    "The plot shows the seed means; the table gives the spread.",
    "",
  );
  out.push(...bernoulliSection(input.classes, budget.batch));
  out.push(...discussion(results, init, calibratedKnn, evalSteps));
  out.push(
    "## Commentary",
    "",
    COMMENTARY_START,
    input.commentary?.trim() || COMMENTARY_PLACEHOLDER,
    COMMENTARY_END,
    "",
    "## Per-run results",
    "",
    "| method | seed | status | kNN (end) | linear (end) | train s | process s | run directory |",
    "|---|---:|---|---:|---:|---:|---:|---|",
    ...input.runs.map((r) =>
      `| ${r.method} | ${r.seed} | ${r.status}${
        r.failure ? `: ${r.failure.replaceAll("|", "\\|")}` : ""
      } | ` +
      `${r.finalKnn !== undefined ? pct(r.finalKnn) : "—"} | ` +
      `${typeof r.finalLinear === "number" ? pct(r.finalLinear) : "—"} | ` +
      `${r.trainSeconds !== undefined ? r.trainSeconds.toFixed(0) : "—"} | ` +
      `${r.processSeconds !== undefined ? r.processSeconds.toFixed(0) : "—"} | ${r.dir} |`
    ),
    ...input.randomInit.map((r) =>
      `| random init | ${r.seed} | evaluated | ${pct(r.knnTop1)} | ` +
      `${r.linearTop1 !== null ? pct(r.linearTop1) : "—"} | — | ` +
      `${r.seconds !== undefined ? r.seconds.toFixed(0) : "—"} |${r.dir ? ` ${r.dir}` : ""} |`
    ),
    ...(input.calibratedInit ?? []).map((r) =>
      `| ${CALIBRATED_INIT.id} | ${r.seed} | ${r.status} | ` +
      `${r.finalKnn !== undefined ? pct(r.finalKnn) : "—"} | ` +
      `${typeof r.finalLinear === "number" ? pct(r.finalLinear) : "—"} | — | ` +
      `${r.processSeconds !== undefined ? r.processSeconds.toFixed(0) : "—"} | ${r.dir} |`
    ),
    "",
  );
  return out.join("\n");
}

/** The generated discussion: rankings, gaps and whether they exceed the seed spread. */
function discussion(
  results: MethodResult[],
  init: Stat | undefined,
  calibratedInit: Stat | undefined,
  evalSteps: number[],
): string[] {
  const out = ["## Discussion (generated from the numbers)", ""];
  const withFinal = results.filter((r) => r.finalKnn).sort((a, b) =>
    b.finalKnn!.mean - a.finalKnn!.mean
  );
  if (withFinal.length === 0) {
    out.push("No run has finished yet.", "");
    return out;
  }
  const byId = new Map(results.map((r) => [r.method.id, r]));
  out.push(
    "Final kNN top-1, highest mean first: " +
      withFinal.map((r) => `${r.method.label} ${pct(r.finalKnn!.mean)}%`).join(", ") + ".",
    "",
  );
  const bullets: string[] = [];
  const [first, second] = withFinal;
  if (second) {
    bullets.push(
      `Highest mean final kNN top-1: ` +
        compare(first.method.label, first.finalKnn!, second.method.label, second.finalKnn!) + ".",
    );
  }
  const linear = results.filter((r) => r.finalLinear).sort((a, b) =>
    b.finalLinear!.mean - a.finalLinear!.mean
  );
  if (linear.length >= 2) {
    bullets.push(
      "Highest mean linear top-1 (end): " +
        compare(
          linear[0].method.label,
          linear[0].finalLinear!,
          linear[1].method.label,
          linear[1].finalLinear!,
        ) + ".",
    );
  }
  const triplet = byId.get("triplet");
  for (const baseline of ["byol", "infonce"]) {
    const other = byId.get(baseline);
    if (!triplet?.finalKnn || !other?.finalKnn) continue;
    let text = `The paper's comparison with ${other.method.label}, final kNN: ` +
      compare(triplet.method.label, triplet.finalKnn, other.method.label, other.finalKnn) + ".";
    const shared = evalSteps.filter((s) => triplet.knnAt.has(s) && other.knnAt.has(s));
    if (shared.length > 1) {
      const ahead = shared.filter((s) => triplet.knnAt.get(s)!.mean > other.knnAt.get(s)!.mean);
      text += ` Over the ${shared.length} evaluation steps, its mean kNN was above ` +
        `${other.method.label}'s at ${ahead.length} of them` +
        (ahead.length > 0 && ahead.length < shared.length ? ` (steps ${ahead.join(", ")})` : "") +
        ".";
    }
    if (triplet.finalLinear && other.finalLinear) {
      text += " Linear probe: " +
        compare(triplet.method.label, triplet.finalLinear, other.method.label, other.finalLinear) +
        ".";
    }
    bullets.push(text);
  }
  const rank2 = byId.get("rank-2");
  const rankK = byId.get("rank-bernoulli");
  if (rank2?.finalKnn && rankK?.finalKnn) {
    bullets.push(
      "The Bernoulli prediction (a deputy beyond the expected false negatives), final kNN: " +
        compare(rankK.method.label, rankK.finalKnn, rank2.method.label, rank2.finalKnn) + ".",
    );
  }
  const tripletK = byId.get("triplet-bernoulli");
  if (triplet?.finalKnn && tripletK?.finalKnn) {
    bullets.push(
      "Window choice, final kNN: " +
        compare(tripletK.method.label, tripletK.finalKnn, triplet.method.label, triplet.finalKnn) +
        ".",
    );
  }
  if (evalSteps.length > 1) {
    const leaders = evalSteps.map((s) => {
      const atStep = results.filter((r) => r.knnAt.has(s)).sort((a, b) =>
        b.knnAt.get(s)!.mean - a.knnAt.get(s)!.mean
      );
      return `step ${s}: ${atStep[0].method.label} (${pct(atStep[0].knnAt.get(s)!.mean)}%)`;
    });
    bullets.push(`Highest mean kNN top-1 at each evaluation — ${leaders.join("; ")}.`);
  }
  const againstBaseline = (what: string, baseline: Stat) => {
    const above = withFinal.filter((r) => r.finalKnn!.mean > baseline.mean);
    const below = withFinal.filter((r) => r.finalKnn!.mean <= baseline.mean);
    const names = (list: MethodResult[]) => list.map((r) => r.method.label).join(", ");
    bullets.push(
      `Against ${what} (kNN top-1 ${pct(baseline.mean)}%` +
        (baseline.n > 1 ? ` ± ${pct(baseline.std)}` : "") + "): " +
        (below.length === 0
          ? "every method's mean final kNN top-1 is above it"
          : above.length === 0
          ? "no method's mean final kNN top-1 is above it"
          : `mean final kNN above it: ${names(above)}; not above it: ${names(below)}`) +
        ".",
    );
  };
  if (init) againstBaseline("the untrained backbone", init);
  if (calibratedInit) {
    againstBaseline("the untrained backbone with BatchNorm statistics estimated", calibratedInit);
  }
  out.push(...bullets.map((b) => `- ${b}`), "");
  const seeds = Math.max(...results.map((r) => r.finalKnn?.n ?? 0));
  if (seeds < 3) {
    out.push(
      `With ${seeds} seed${seeds === 1 ? "" : "s"} per method, differences of this size are not ` +
        "established by this report.",
      "",
    );
  }
  return out;
}

/** kNN top-1 (seed mean) against steps, one line per method, step 0 = the random init. */
export async function knnPlot(
  methods: Method[],
  runs: RunRecord[],
  randomInit: InitResult[],
): Promise<string> {
  const init = describe(randomInit.map((r) => r.knnTop1));
  const points: CurvePoint[] = [];
  for (const m of methods) {
    const result = aggregate(m, runs.filter((r) => r.method === m.id));
    if (result.knnAt.size === 0) continue;
    if (init) points.push({ step: 0, value: 100 * init.mean, series: m.short });
    for (const [step, stat] of result.knnAt) {
      points.push({ step, value: 100 * stat.mean, series: m.short });
    }
  }
  return await renderCurves([
    { title: "kNN monitor during training (mean over seeds)", yTitle: "kNN top-1 (%)", points },
  ]);
}

/** What the reproduce command names beside the budget. */
export interface CommandInput {
  budget: Budget;
  mode: "default" | "quick";
  methods: Method[];
  runs: string;
  report: string;
  /** DENO_WEBGPU_BACKEND, when set. */
  backend?: string;
}

/** The command line that reproduces this experiment, every budget value explicit. */
export function reproduceCommand(options: CommandInput): string {
  const b = options.budget;
  const env = options.backend;
  return [
    ...(env ? [`DENO_WEBGPU_BACKEND=${env}`] : []),
    "deno task experiment",
    ...(options.mode === "quick" ? ["--quick"] : []),
    `--steps ${b.steps} --eval-every ${b.evalEvery} --eval-bank ${b.evalBank}`,
    `--eval-test ${b.evalTest} --probe-epochs ${b.probeEpochs} --widths ${b.widths.join(",")}`,
    `--batch ${b.batch} --seeds ${b.seeds}`,
    ...(b.lr !== undefined ? [`--lr ${b.lr}`] : []),
    `--methods ${options.methods.map((m) => m.id).join(",")}`,
    `--runs ${options.runs} --report ${options.report}`,
  ].join(" ");
}
