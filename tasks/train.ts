/**
 * `deno task train [flags]`: self-supervised pretraining with the truncated triplet loss
 * (or a baseline), writing a run directory: config.json, metrics.jsonl, checkpoint.safetensors,
 * summary.json and curves.svg. `--help` lists the flags.
 */
import { acquireGpu } from "../runtime/gpu.ts";
import { Augmenter } from "../data/augment.ts";
import { BatchLoader } from "../data/loader.ts";
import { SslModel, sslModelConfig } from "../models/ssl.ts";
import { Schedule } from "../models/schedule.ts";
import { checkBatchFits } from "../models/memory.ts";
import { DivergedError, TrainingLog } from "../models/training_log.ts";
import type { EvaluatedFeatures } from "../models/evaluate.ts";
import { assertSameConfig, broadcastText, GradientSync } from "../models/data_parallel.ts";
import { type Collective, openMpi } from "../runtime/mpi.ts";
import { formatDuration, positiveInt, Progress, runMain, UserError } from "./cli.ts";
import { writeInsightPictures } from "./pictures.ts";
import { readConfigFile } from "./config_file.ts";
import { PRESETS, type TrainConfig } from "./presets.ts";
import { departuresOf } from "./departures.ts";
import {
  augmentConfig,
  EVAL_FORWARD_BATCH,
  evaluationData,
  type Flags,
  loadSplit,
  parseTrainFlags,
  resolveConfig,
  RESUME_FLAGS,
  type RunControl,
  runControl,
  trainHelp,
} from "./train_config.ts";
import {
  Checkpoints,
  describeRun,
  doneLine,
  EvaluationMonitor,
  fallbackWarning,
  Interrupts,
  RunFiles,
  writeJsonAtomic,
  writeSummary,
} from "./train_run.ts";

/** The run's config: resolved from the flags, or read back from the run being resumed. */
async function runConfig(
  flags: Flags,
  mpi: Collective | undefined,
): Promise<{ config: TrainConfig; outDir: string }> {
  const ranks = mpi?.size ?? 1;
  const lead = (mpi?.rank ?? 0) === 0;
  const resumeDir = flags.resume as string | undefined;
  if (!resumeDir) {
    // Like a resumed run's config.json, rank 0 reads the file and sends it to every rank.
    let file = flags.config && lead ? await readConfigFile(flags.config as string) : {};
    if (mpi && flags.config) file = JSON.parse(await broadcastText(mpi, JSON.stringify(file)));
    const config = resolveConfig(flags, ranks, file);
    const outDir = (flags.out as string | undefined) ??
      `runs/${config.preset}-${config.loss.kind}-seed${config.seed}`;
    if (lead) await refuseExistingRun(outDir, flags.overwrite === true);
    return { config, outDir };
  }
  const ignored = Object.keys(flags).filter((name) =>
    flags[name] !== undefined && !RESUME_FLAGS.includes(name)
  );
  if (ignored.length > 0) {
    throw new UserError(
      `--resume continues ${resumeDir} with its own config.json, so ` +
        `${ignored.map((f) => `--${f}`).join(", ")} would not apply; with --resume only ` +
        `${RESUME_FLAGS.slice(1).map((f) => `--${f}`).join(", ")} are allowed ` +
        "(start a new run with --out to change the recipe)",
    );
  }
  // Rank 0 reads the run (other machines need not share its disk) and sends it to every rank.
  let saved = "";
  if (lead) {
    try {
      saved = await Deno.readTextFile(`${resumeDir}/config.json`);
    } catch {
      throw new UserError(`--resume ${resumeDir}: no config.json there (is it a run directory?)`);
    }
  }
  if (mpi) saved = await broadcastText(mpi, saved);
  const config = JSON.parse(saved) as TrainConfig;
  // Runs written before these fields existed.
  config.lrSchedule ??= "per-step";
  config.headInit ??= "torch-default";
  config.ranks ??= 1;
  if (config.ranks !== ranks) {
    throw new UserError(
      `${resumeDir} was trained by ${config.ranks} process(es) and this is ${ranks}: resume it ` +
        (config.ranks === 1
          ? "without mpiexec"
          : `with mpiexec -n ${config.ranks} ... --resume ${resumeDir} --distributed`) +
        " (the data order and the effective batch depend on the number of processes)",
    );
  }
  // A resumed run may be extended; everything else stays as it was.
  const epochs = positiveInt("epochs", flags.epochs as string | undefined);
  if (epochs !== undefined) [config.epochs, config.steps] = [epochs, undefined];
  config.steps = positiveInt("steps", flags.steps as string | undefined) ?? config.steps;
  // An extended run lists (and its config.json records) the length it now trains to.
  if (extendsRun(flags) && PRESETS[config.preset]) config.deviations = departuresOf(config);
  return { config, outDir: resumeDir };
}

/** Whether a --resume changes the run's length (--steps or --epochs). */
function extendsRun(flags: Flags): boolean {
  return flags.steps !== undefined || flags.epochs !== undefined;
}

/** A non-empty run directory is only replaced when asked to (--overwrite). */
async function refuseExistingRun(outDir: string, overwrite: boolean): Promise<void> {
  const entries: string[] = [];
  try {
    for await (const entry of Deno.readDir(outDir)) entries.push(entry.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    if (e instanceof Deno.errors.NotADirectory) {
      throw new UserError(`--out ${outDir} is a file, not a directory: choose another --out`);
    }
    throw e;
  }
  if (entries.length > 0 && !overwrite) {
    throw new UserError(
      `--out ${outDir} is not empty (${entries.sort().slice(0, 4).join(", ")}` +
        `${entries.length > 4 ? ", ..." : ""}): continue that run with --resume ${outDir}, ` +
        "replace it with --overwrite, or choose another --out",
    );
  }
}

async function main(): Promise<number> {
  const flags = parseTrainFlags(Deno.args);
  if (flags.help) {
    console.log(trainHelp());
    return 0;
  }
  const control = runControl(flags);
  if (!flags.distributed) return await runTraining(flags, control, undefined);
  // TRITRAIN_MPI_LIBRARY: another MPICH-ABI library (e.g. Intel MPI's libmpi.so.12).
  const library = Deno.env.get("TRITRAIN_MPI_LIBRARY") || undefined;
  const mpi = userErrorFrom(() => openMpi({ library }));
  const code = await runTraining(flags, control, mpi);
  mpi.finalize();
  return code;
}

/** One training run (one rank of it when `mpi` is given). */
async function runTraining(
  flags: Flags,
  control: RunControl,
  mpi: Collective | undefined,
): Promise<number> {
  const lead = (mpi?.rank ?? 0) === 0;
  const resuming = flags.resume !== undefined;
  const { config, outDir } = await runConfig(flags, mpi);
  // Departures are derived from the other fields: comparing those names the flag that differs.
  if (mpi) {
    await assertSameConfig(mpi, JSON.stringify({ config: { ...config, deviations: [] }, outDir }));
  }
  const files = new RunFiles(outDir);

  const gpu = await acquireGpu();
  gpu.settings.plan = control.kernelPlan;
  const progress = new Progress(!lead);
  progress.log(gpu.describe() + (mpi ? `; ${mpi.size} data-parallel processes (MPI)` : ""));
  const train = await loadSplit(config, "train");
  const test = await loadSplit(config, "test");
  const evalData = await evaluationData(config, train, test);
  const modelConfig = sslModelConfig(config, train.channels);
  const memory = userErrorFrom(() =>
    checkBatchFits(
      modelConfig.backbone,
      config.batch,
      config.accum,
      config.imageSize,
      gpu.maxBindingBytes,
    )
  );
  const imagesPerStep = config.batch * config.accum * config.ranks;
  const schedule = userErrorFrom(() =>
    new Schedule({
      trainImages: train.length,
      imagesPerStep,
      epochs: config.epochs,
      steps: config.steps,
      baseLr: config.lr,
      warmupEpochs: config.warmupEpochs,
      lrShape: config.lrSchedule,
      emaBase: config.emaBase,
    })
  );
  const { momentum, weightDecay, eta } = config;
  const model = new SslModel(gpu, modelConfig, config.batch, config.seed, {
    momentum,
    weightDecay,
    eta,
  });
  progress.log(describeRun(config, model, train, test, memory, schedule, outDir, evalData));
  const warning = fallbackWarning(config, gpu, memory);
  if (warning) progress.log(warning);

  const checkpoints = new Checkpoints(files, model, config, schedule, control, lead);
  let startStep = 0;
  let wallBefore = 0;
  if (resuming && lead) {
    ({ step: startStep, wallSeconds: wallBefore } = await checkpoints.restore());
    await TrainingLog.truncate(files.metrics, startStep);
    if (extendsRun(flags)) {
      // Resuming again (or repeating the run with --config) continues to the new length.
      await writeJsonAtomic(files.config, config);
    }
    progress.log(`resumed at step ${startStep}`);
  } else if (lead) {
    // Everything is validated and loaded: only now is the run directory written.
    await files.startNew();
    await writeJsonAtomic(files.config, config);
  }
  const sync = mpi
    ? new GradientSync(gpu, mpi, model.online.parameters(), model.online.states(), {
      // Running statistics as one process applying the ranks' micro-batches in turn would have them
      // (BN momentum 0.1; two online forwards per micro-batch).
      stateDecayPerRank: 0.9 ** (2 * config.accum),
    })
    : undefined;
  if (mpi && sync) {
    // Every rank starts from rank 0's model (and, resuming, its optimizer state and target).
    const target = [...model.target.parameters(), ...model.target.states()].map((t) => t.value);
    await sync.broadcastInitial(resuming ? [...model.velocity, ...target] : []);
    if (!resuming) model.copyOnlineToTarget();
    const position = await broadcastText(mpi, JSON.stringify([startStep, wallBefore]));
    [startStep, wallBefore] = JSON.parse(position);
  }

  const started = performance.now();
  const wall = () => wallBefore + (performance.now() - started) / 1000;
  const augmenter = new Augmenter(gpu, augmentConfig(config), train, config.imageSize);
  const loader = BatchLoader.forTraining(gpu, train, {
    batchSize: config.batch,
    seed: config.seed,
    augmenter,
    accum: config.accum,
    startStep,
    rank: mpi?.rank,
    ranks: mpi?.size,
  });
  const totalSteps = schedule.totalSteps;
  const log = new TrainingLog(
    gpu,
    lead ? files.metrics : undefined,
    model.lossSlots(config.accum),
    config.accum,
    schedule.stepsPerEpoch,
    wall,
  );
  const evaluation = new EvaluationMonitor(
    gpu,
    model,
    evalData,
    config,
    totalSteps,
    log,
    progress,
  );
  const interrupts = new Interrupts();
  // Data-parallel ranks stop together: each step all-reduces whether any rank was interrupted.
  const stopVote = sync ? gpu.zeros([1]) : undefined;
  let stopAgreed = false;
  const stopping = () => sync ? stopAgreed : interrupts.requested;
  // Read the losses back whenever something else reads or writes anyway.
  const flushDue = (done: number) =>
    done % config.logEvery === 0 || done === totalSteps || checkpoints.due(done) ||
    stopping() || done === control.stopAfter || evaluation.due(done);

  try {
    for (let step = startStep; step < totalSteps; step++) {
      const done = step + 1;
      if (control.debugNanAt === done) poisonFirstWeight(model);
      const batches = await loader.nextStep();
      const [lr, ema] = [schedule.lrAt(step), schedule.emaAt(step)];
      const lossSlot = log.slot(done, lr, ema, imagesPerStep);
      if (sync && stopVote) {
        model.accumulateGradients(batches.microBatches, lossSlot);
        stopVote.write(Float32Array.of(interrupts.requested ? 1 : 0));
        const synced = await sync.allReduce([lossSlot, stopVote]);
        stopAgreed = synced.extras[1][0] > 0;
        log.recordSync(synced.readMs + synced.reduceMs + synced.uploadMs);
        model.update(lr, ema);
      } else {
        model.step(batches.microBatches, lr, ema, lossSlot);
      }
      batches.release();
      if (flushDue(done)) {
        const { lastLoss, imagesPerSecond } = await log.flush(model.norms);
        const eta = (totalSteps - done) * (wall() - wallBefore) / Math.max(1, done - startStep);
        progress.update(
          `step ${done}/${totalSteps} ${progress.bar(done / totalSteps)} epoch ` +
            `${schedule.epochAt(done).toFixed(2)} loss ${lastLoss.toFixed(4)} ` +
            `${imagesPerSecond.toFixed(1)} img/s ETA ${formatDuration(eta)}`,
        );
      }
      if (lead && evaluation.due(done)) await evaluation.run(done, false);
      if (control.stopAfter === done) {
        interrupts.request(`--stop-after ${done}`);
        stopAgreed = true;
      }
      if (checkpoints.due(done) || stopping()) await checkpoints.save(done, wall());
      if (stopping()) {
        await loader.close();
        progress.log(
          `${interrupts.reason ?? "interrupted on another rank"}: checkpoint of step ${done} ` +
            `written to ${files.checkpoint}; continue with: deno task train --resume ${outDir}` +
            (mpi ? " --distributed (under the same mpiexec -n)" : ""),
        );
        return 130;
      }
    }
    await loader.close();
    await checkpoints.save(totalSteps, wall());
  } catch (e) {
    if (e instanceof DivergedError) throw checkpoints.divergedError(e);
    throw e;
  }
  interrupts.close();
  if (!lead) return 0;
  const trainSeconds = wall();
  let evaluated: EvaluatedFeatures | undefined;
  const finalEval = evalData.bank
    ? await evaluation.run(totalSteps, config.probeEpochs > 0, (f) => evaluated = f)
    : undefined;
  // Unevaluated runs still get pictures of their own images (unlabelled: no class marks).
  const [pictureBank, pictureTest] = [evalData.bank ?? train, evalData.test ?? test];
  const insight = flags["no-pictures"] ? {} : await writeInsightPictures(
    gpu,
    model.online.backbone,
    pictureBank,
    pictureTest,
    {
      knnK: config.knnK,
      knnTemperature: config.knnTemperature,
      // The bank of the final kNN, capped: the pictures' neighbour search runs on the host.
      bankSize: Math.min(
        finalEval?.bankSize ?? (config.knnBankSize || pictureBank.length),
        PICTURE_BANK_LIMIT,
      ),
      testSize: finalEval?.testSize ?? config.evalTestSize,
      neighbours: 8,
      mapPoints: 1000,
      seed: config.seed,
      batchSize: EVAL_FORWARD_BATCH,
      features: evaluated,
    },
    `${outDir}/insight`,
    (what, done, total) => progress.update(`pictures: ${what} ${done}/${total}`),
  );
  const summary = await writeSummary(
    files,
    config,
    schedule,
    finalEval,
    trainSeconds,
    gpu,
    insight,
    "reason" in evalData ? evalData.reason : undefined,
  );
  train.close?.();
  test.close?.();
  if (evalData.bank !== train) evalData.bank?.close?.();
  if (evalData.test !== test) evalData.test?.close?.();
  progress.log(doneLine(summary, files));
  return 0;
}

/** Training images searched for the end-of-run pictures at most (the search runs on the host). */
const PICTURE_BANK_LIMIT = 20000;

/** The value of `make`, with its error as a one-line user error. */
function userErrorFrom<T>(make: () => T): T {
  try {
    return make();
  } catch (e) {
    throw new UserError((e as Error).message);
  }
}

/** --debug-nan-at: a NaN weight, to exercise the divergence stop. */
function poisonFirstWeight(model: SslModel): void {
  const weight = model.online.parameters()[0].value;
  weight.write(new Float32Array(weight.size).fill(NaN));
}

if (import.meta.main) runMain("train", main);
