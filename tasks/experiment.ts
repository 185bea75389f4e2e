/**
 * `deno task experiment [flags]`: does the truncated triplet loss learn faster? Equal-budget
 * pretraining (same data, backbone, batch, seed, augmentations and steps) of the smoothed rank-k
 * loss and its baselines, one `tasks/train.ts` subprocess per method and seed, then a report
 * (EXPERIMENTS.md): kNN top-1 during training, the final linear probe, the two random-init
 * baselines, the Bernoulli false-negative analysis and a discussion generated from the numbers.
 * This file is the command line (flags, progress, files); the parts live in tasks/experiment/:
 * budgets.ts (what runs), runner.ts (train.ts subprocesses), report.ts (the prose), and the
 * statistics in models/statistics.ts. `--help` lists the flags and the two budgets.
 */
import { parseArgs } from "node:util";
import { formatDuration, runMain, UserError } from "./cli.ts";
import { loadSplit } from "./train_config.ts";
import {
  type Budget,
  budgetOverrides,
  BUDGETS,
  CALIBRATED_INIT,
  CALIBRATION_STEPS,
  FALSE_NEGATIVE_EPSILON,
  type Method,
  planRuns,
  RANDOM_INIT,
  RELEASED_WINDOW,
  resolveBudget,
  selectMethods,
  trainConfigFor,
} from "./experiment/budgets.ts";
import {
  inspectRun,
  readRun,
  Runner,
  type RunOutcome,
  type RunRecord,
} from "./experiment/runner.ts";
import {
  buildReport,
  DATASET_LABELS,
  type InitResult,
  keptCommentary,
  knnPlot,
  reproduceCommand,
} from "./experiment/report.ts";

const HELP = `usage: deno task experiment [flags]

Equal-budget pretraining on ${
  DATASET_LABELS[BUDGETS.default.dataset]
} of the truncated triplet loss and its baselines, one
\`tasks/train.ts\` run per method and seed (runs/experiment/<method>-seed<s>; a run whose
summary.json exists is skipped, an interrupted one resumes from its checkpoint), then a report
with kNN top-1 during training, the final linear probe, the random-init baselines (train.ts runs
too: BatchNorm statistics as initialised, --steps 0 in <runs>/random-init-seed<s>; and estimated
by ${CALIBRATION_STEPS} steps at learning rate 0 in <runs>/calibrated-init-seed<s>), the Bernoulli
false-negative analysis and a generated discussion.

Methods (--methods, default: all but the last):
  triplet            smoothed rank-k, window [${RELEASED_WINDOW}] (the released default)
  rank-2             rank-k with k = 2
  rank-bernoulli     rank-k with k = bernoulliK(classes, batch, ${FALSE_NEGATIVE_EPSILON})
  median, hardest    rank-k at the median / at rank 1
  byol, infonce      the BYOL and InfoNCE (SimCLR) baselines
  triplet-bernoulli  smoothed rank-k, window [k, k+8] with k from bernoulliK (optional)

Budgets (flags below override either):
  default  ResNet-18 widths ${BUDGETS.default.widths}, batch ${BUDGETS.default.batch}, ${BUDGETS.default.steps} steps, kNN every ${BUDGETS.default.evalEvery} steps,
           bank ${BUDGETS.default.evalBank} / test ${BUDGETS.default.evalTest}, probe ${BUDGETS.default.probeEpochs} epochs, ${BUDGETS.default.seeds} seeds;
           ${BUDGETS.default.sizedFor} (2-core lavapipe CPU adapter)
           -> ${BUDGETS.default.runs}/, ${BUDGETS.default.report}
  --quick  widths ${BUDGETS.quick.widths}, batch ${BUDGETS.quick.batch}, ${BUDGETS.quick.steps} steps, kNN every ${BUDGETS.quick.evalEvery} steps,
           bank ${BUDGETS.quick.evalBank} / test ${BUDGETS.quick.evalTest}, probe ${BUDGETS.quick.probeEpochs} epochs, ${BUDGETS.quick.seeds} seed;
           ${BUDGETS.quick.sizedFor}
           -> ${BUDGETS.quick.runs}/, ${BUDGETS.quick.report}

  --quick              the reduced budget above
  --seeds N            seeds 0..N-1
  --steps N            optimizer steps per run
  --eval-every N       kNN evaluation every N steps (0: only at the end)
  --eval-bank N        training images in the kNN bank and probe set
  --eval-test N        test images evaluated
  --probe-epochs N     linear probe epochs at the end (0: none)
  --widths A,B,C,D     ResNet-18 stage widths
  --batch N            images per step (negatives come from the batch)
  --lr X               learning rate (default: the small preset's, scaled to the batch)
  --methods A,B,...    methods to run (ids above)
  --runs DIR           run directories go here
  --report FILE        the Markdown report (its plot is written beside it as <name>-knn.svg)
  --report-only        do not train; aggregate the runs that exist
  --retry-failed       rerun runs that failed before (default: report them as failed)
  --help               this text`;

function parseFlags(args: string[]): Record<string, string | boolean | undefined> {
  try {
    return parseArgs({
      args,
      options: {
        quick: { type: "boolean" },
        seeds: { type: "string" },
        steps: { type: "string" },
        "eval-every": { type: "string" },
        "eval-bank": { type: "string" },
        "eval-test": { type: "string" },
        "probe-epochs": { type: "string" },
        widths: { type: "string" },
        batch: { type: "string" },
        lr: { type: "string" },
        methods: { type: "string" },
        runs: { type: "string" },
        report: { type: "string" },
        "report-only": { type: "boolean" },
        "retry-failed": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    throw new UserError(`${(e as Error).message} (see --help)`);
  }
}

interface Options {
  budget: Budget;
  mode: "default" | "quick";
  methods: Method[];
  runs: string;
  report: string;
  reportOnly: boolean;
  retryFailed: boolean;
  /** Balanced classes of the dataset (Bernoulli analysis). */
  classes: number;
  /** Images in the dataset's training split. */
  trainImages: number;
  /** Budget fields that flags changed from the preset. */
  overrides: string[];
  /** The learning rate train.ts resolves for the budget. */
  lr: number;
}

/** Read the runs, write the report and its plot beside it. */
async function writeReport(options: Options): Promise<string> {
  const runs: RunRecord[] = [];
  const randomInit: InitResult[] = [];
  const calibratedInit: RunRecord[] = [];
  for (let seed = 0; seed < options.budget.seeds; seed++) {
    for (const m of options.methods) runs.push(await readRun(options.runs, m.id, seed));
    const init = await readRun(options.runs, RANDOM_INIT.id, seed);
    if (init.status === "done") {
      randomInit.push({
        seed,
        knnTop1: init.finalKnn!,
        linearTop1: init.finalLinear ?? null,
        seconds: init.processSeconds,
        dir: init.dir,
      });
    }
    calibratedInit.push(await readRun(options.runs, CALIBRATED_INIT.id, seed));
  }
  const reportDir = options.report.includes("/")
    ? options.report.slice(0, options.report.lastIndexOf("/"))
    : ".";
  const base = options.report.slice(options.report.lastIndexOf("/") + 1).replace(/\.md$/i, "");
  const plotFile = `${base}-knn.svg`;
  const previous = await Deno.readTextFile(options.report).catch(() => "");
  const report = buildReport({
    budget: options.budget,
    mode: options.mode,
    methods: options.methods,
    runs,
    randomInit,
    calibratedInit,
    classes: options.classes,
    trainImages: options.trainImages,
    overrides: options.overrides,
    lr: options.lr,
    command: reproduceCommand({ ...options, backend: Deno.env.get("DENO_WEBGPU_BACKEND") }),
    plotFile,
    commentary: keptCommentary(previous),
  });
  await Deno.mkdir(reportDir, { recursive: true });
  await Deno.writeTextFile(options.report, report);
  await Deno.writeTextFile(
    `${reportDir}/${plotFile}`,
    await knnPlot(options.methods, runs, randomInit),
  );
  return options.report;
}

async function main(): Promise<number> {
  const flags = parseFlags(Deno.args);
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  const budget = resolveBudget(flags);
  // Validate the shared training flags once, through train.ts's own checks.
  const config = trainConfigFor(budget, 0);
  const train = await loadSplit(config, "train");
  const { classes, length: trainImages } = train;
  train.close?.();
  if (train.labelled === false) {
    throw new UserError("the experiment compares kNN accuracies: it needs labelled data");
  }
  const methods = selectMethods(classes, budget.batch, flags.methods as string | undefined);
  const options: Options = {
    budget,
    mode: flags.quick ? "quick" : "default",
    methods,
    runs: budget.runs,
    report: budget.report,
    reportOnly: Boolean(flags["report-only"]),
    retryFailed: Boolean(flags["retry-failed"]),
    classes,
    trainImages,
    overrides: budgetOverrides(budget, flags.quick ? BUDGETS.quick : BUDGETS.default),
    lr: config.lr,
  };
  const started = performance.now();
  const plans = [];
  for (const spec of planRuns(budget, methods, options.runs)) {
    plans.push(await inspectRun(spec, options.retryFailed));
  }
  const runner = new Runner();
  let outcome: RunOutcome | undefined;
  if (!options.reportOnly) {
    runner.listen();
    for (const [index, plan] of plans.entries()) {
      console.log(`run ${index + 1}/${plans.length}: ${plan.method.label}, seed ${plan.seed}`);
      outcome = await runner.run(plan);
      if (outcome === "interrupted" || runner.interruptedBy !== undefined) break;
    }
    runner.close();
  }
  const report = await writeReport(options);
  console.log(`report: ${report} (${formatDuration((performance.now() - started) / 1000)})`);
  if (runner.interruptedBy !== undefined || outcome === "interrupted") {
    console.log("interrupted: run the same command again to continue");
    return 130;
  }
  return 0;
}

if (import.meta.main) runMain("experiment", main);
