/**
 * `deno task train [flags]`: self-supervised pretraining with the truncated triplet loss
 * (or a baseline), writing a run directory: config.json, metrics.jsonl, checkpoint.safetensors,
 * summary.json and curves.svg. `--help` lists the flags.
 */
import { acquireGpu } from "../runtime/gpu.ts";
import { Augmenter } from "../data/augment.ts";
import { BatchLoader } from "../data/loader.ts";
import { SslModel } from "../models/ssl.ts";
import { Schedule } from "../models/schedule.ts";
import { checkBatchFits } from "../models/memory.ts";
import { DivergedError, TrainingLog } from "../models/training_log.ts";
import { formatDuration, positiveInt, Progress, runMain, UserError } from "./cli.ts";
import type { TrainConfig } from "./presets.ts";
import {
  augmentConfig,
  type Flags,
  loadSplit,
  parseTrainFlags,
  resolveConfig,
  RESUME_FLAGS,
  runControl,
  sslModelConfig,
  trainHelp,
} from "./train_config.ts";
import {
  Checkpoints,
  describeRun,
  doneLine,
  EvaluationMonitor,
  Interrupts,
  RunFiles,
  writeSummary,
} from "./train_run.ts";

/** The run's config: resolved from the flags, or read back from the run being resumed. */
async function runConfig(flags: Flags): Promise<{ config: TrainConfig; outDir: string }> {
  const resumeDir = flags.resume as string | undefined;
  if (!resumeDir) {
    const config = resolveConfig(flags);
    const outDir = (flags.out as string | undefined) ??
      `runs/${config.preset}-${config.loss.kind}-seed${config.seed}`;
    await refuseExistingRun(outDir, flags.overwrite === true);
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
  let saved: string;
  try {
    saved = await Deno.readTextFile(`${resumeDir}/config.json`);
  } catch {
    throw new UserError(`--resume ${resumeDir}: no config.json there (is it a run directory?)`);
  }
  const config = JSON.parse(saved) as TrainConfig;
  // Runs written before these fields existed.
  config.lrSchedule ??= "per-step";
  config.headInit ??= "torch-default";
  // A resumed run may be extended; everything else stays as it was.
  const epochs = positiveInt("epochs", flags.epochs as string | undefined);
  if (epochs !== undefined) [config.epochs, config.steps] = [epochs, undefined];
  config.steps = positiveInt("steps", flags.steps as string | undefined) ?? config.steps;
  return { config, outDir: resumeDir };
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
  const resuming = flags.resume !== undefined;
  const { config, outDir } = await runConfig(flags);
  const files = new RunFiles(outDir);

  const gpu = await acquireGpu();
  const progress = new Progress();
  progress.log(gpu.describe());
  const train = await loadSplit(config, "train");
  const test = await loadSplit(config, "test");
  const modelConfig = sslModelConfig(config, train.channels);
  const memory = (() => {
    try {
      return checkBatchFits(
        modelConfig.backbone,
        config.batch,
        config.accum,
        config.imageSize,
        gpu.maxBindingBytes,
      );
    } catch (e) {
      throw new UserError((e as Error).message);
    }
  })();
  const imagesPerStep = config.batch * config.accum;
  const schedule = (() => {
    try {
      return new Schedule({
        trainImages: train.length,
        imagesPerStep,
        epochs: config.epochs,
        steps: config.steps,
        baseLr: config.lr,
        warmupEpochs: config.warmupEpochs,
        lrShape: config.lrSchedule,
        emaBase: config.emaBase,
      });
    } catch (e) {
      throw new UserError((e as Error).message);
    }
  })();
  const { momentum, weightDecay, eta } = config;
  const model = new SslModel(gpu, modelConfig, config.batch, config.seed, {
    momentum,
    weightDecay,
    eta,
  });
  progress.log(describeRun(config, model, train, test, memory, schedule, outDir));

  const checkpoints = new Checkpoints(files, model, config, schedule, control);
  let startStep = 0;
  let wallBefore = 0;
  if (resuming) {
    ({ step: startStep, wallSeconds: wallBefore } = await checkpoints.restore());
    await TrainingLog.truncate(files.metrics, startStep);
    progress.log(`resumed at step ${startStep}`);
  } else {
    // Everything is validated and loaded: only now is the run directory written.
    await files.startNew();
    await Deno.writeTextFile(files.config, JSON.stringify(config, null, 1) + "\n");
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
  });
  const totalSteps = schedule.totalSteps;
  const log = new TrainingLog(
    gpu,
    files.metrics,
    model.lossSlots(config.accum),
    config.accum,
    schedule.stepsPerEpoch,
    wall,
  );
  const evaluation = new EvaluationMonitor(
    gpu,
    model,
    train,
    test,
    config,
    totalSteps,
    log,
    progress,
  );
  const interrupts = new Interrupts();
  // Read the losses back whenever something else reads or writes anyway.
  const flushDue = (done: number) =>
    done % config.logEvery === 0 || done === totalSteps || checkpoints.due(done) ||
    interrupts.requested || done === control.stopAfter || evaluation.due(done);

  try {
    for (let step = startStep; step < totalSteps; step++) {
      const done = step + 1;
      if (control.debugNanAt === done) poisonFirstWeight(model);
      const batches = await loader.nextStep();
      const [lr, ema] = [schedule.lrAt(step), schedule.emaAt(step)];
      model.step(batches.microBatches, lr, ema, log.slot(done, lr, ema, imagesPerStep));
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
      if (evaluation.due(done)) await evaluation.run(done, false);
      if (control.stopAfter === done) interrupts.request(`--stop-after ${done}`);
      if (checkpoints.due(done) || interrupts.requested) await checkpoints.save(done, wall());
      if (interrupts.requested) {
        await loader.close();
        progress.log(
          `${interrupts.reason}: checkpoint of step ${done} written to ${files.checkpoint}; ` +
            `continue with: deno task train --resume ${outDir}`,
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
  const trainSeconds = wall();
  const finalEval = await evaluation.run(totalSteps, config.probeEpochs > 0);
  interrupts.close();
  const summary = await writeSummary(files, config, schedule, finalEval, trainSeconds, gpu);
  train.close?.();
  test.close?.();
  progress.log(doneLine(summary, files));
  return 0;
}

/** --debug-nan-at: a NaN weight, to exercise the divergence stop. */
function poisonFirstWeight(model: SslModel): void {
  const weight = model.online.parameters()[0].value;
  weight.write(new Float32Array(weight.size).fill(NaN));
}

if (import.meta.main) runMain("train", main);
