/**
 * `deno task train --config FILE.json`: a training configuration as JSON. Any subset of
 * {@link TrainConfig}'s fields (a run's own config.json is one); the fields it leaves out come from
 * its "preset" (or --preset, or `small`). Every field is checked here, by name, with the ranges the
 * flags use; the flags given beside --config then override the file (tasks/train_config.ts).
 */
import { DATASET_NAMES, LABEL_MODES } from "../data/dataset.ts";
import { ARCH_NAMES } from "../models/resnet.ts";
import { LOSS_KINDS } from "../models/loss.ts";
import { LR_SHAPES } from "../models/schedule.ts";
import { UserError } from "./cli.ts";
import { PRESETS, type TrainConfig } from "./presets.ts";

/** A field's check: undefined when the value is good, else what it must be ("a positive integer"). */
type Check = (value: unknown) => string | undefined;

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v);
const isNumber = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

const positiveInt: Check = (v) => isInt(v) && v >= 1 ? undefined : "a positive integer";
const nonNegativeInt: Check = (v) => isInt(v) && v >= 0 ? undefined : "a non-negative integer";
const finite: Check = (v) => isNumber(v) ? undefined : "a number";
const nonNegative: Check = (v) => isNumber(v) && v >= 0 ? undefined : "a number >= 0";
const positive: Check = (v) => isNumber(v) && v > 0 ? undefined : "a number > 0";
const unitInterval: Check = (v) =>
  isNumber(v) && v >= 0 && v < 1 ? undefined : "a number in [0, 1)";
const boolean: Check = (v) => typeof v === "boolean" ? undefined : "true or false";
const text: Check = (v) => typeof v === "string" ? undefined : "a string";
const oneOf = (allowed: readonly string[]): Check => (v) =>
  typeof v === "string" && allowed.includes(v) ? undefined : `one of ${allowed.join(", ")}`;
const range = (min: (v: number) => boolean, what: string): Check => (v) =>
  Array.isArray(v) && v.length === 2 && v.every(isNumber) && min(v[0]) && v[0] <= v[1]
    ? undefined
    : what;

/** Every field of {@link TrainConfig} and its check (`deno check` fails when a field is missing). */
const FIELD_CHECKS: { [K in keyof Required<TrainConfig>]: Check } = {
  preset: oneOf(Object.keys(PRESETS)),
  deviations: (v) =>
    Array.isArray(v) && v.every((d) => typeof d === "string") ? undefined : "a list of strings",
  overrides: (v) =>
    typeof v === "object" && v !== null && !Array.isArray(v) &&
      Object.values(v).every((o) => typeof o === "string" || typeof o === "boolean")
      ? undefined
      : 'an object of flag values ({"lr": "1.5"})',
  arch: oneOf(ARCH_NAMES),
  widths: (v) =>
    Array.isArray(v) && v.length === 4 && v.every((w) => isInt(w) && w >= 1)
      ? undefined
      : "four positive integers [A, B, C, D]",
  smallImage: boolean,
  dataset: oneOf(DATASET_NAMES),
  data: text,
  labels: oneOf(LABEL_MODES),
  evaluation: oneOf(["auto", "none"]),
  evalData: text,
  imageSize: positiveInt,
  augment: oneOf(["imagenet", "small"]),
  cropScaleMin: (v) => isNumber(v) && v > 0 && v <= 1 ? undefined : "a number in (0, 1]",
  blurSigma: range((a) => a >= 0, "[A, B] with 0 <= A <= B"),
  randomRescale: boolean,
  batch: (v) => isInt(v) && v >= 2 ? undefined : "an integer >= 2 (BatchNorm and negatives)",
  accum: positiveInt,
  ranks: positiveInt,
  epochs: positiveInt,
  steps: nonNegativeInt,
  lr: finite,
  warmupEpochs: nonNegative,
  lrSchedule: oneOf(LR_SHAPES),
  momentum: unitInterval,
  weightDecay: nonNegative,
  eta: positive,
  emaBase: unitInterval,
  projectorHidden: positiveInt,
  projectorOut: positiveInt,
  predictorHidden: positiveInt,
  headInit: oneOf(["torch-default", "released"]),
  loss: () => undefined, // checked field by field below
  seed: nonNegativeInt,
  logEvery: positiveInt,
  evalEvery: nonNegativeInt,
  knnK: positiveInt,
  knnTemperature: positive,
  knnBankSize: nonNegativeInt,
  evalTestSize: nonNegativeInt,
  knnBlockRows: positiveInt,
  probeEpochs: nonNegativeInt,
  probeLr: nonNegative,
  probeBatch: positiveInt,
};

const LOSS_CHECKS: Record<string, Check> = {
  kind: oneOf(LOSS_KINDS),
  window: (v) =>
    Array.isArray(v) && v.length === 2 && v.every((r) => isInt(r) && r >= 1) && v[0] <= v[1]
      ? undefined
      : "[A, B] with integers 1 <= A <= B",
  k: positiveInt,
  margin: finite,
  gamma: finite,
  temperature: positive,
};

/** The flag that sets a field, named in the fix a message suggests. */
const FIELD_FLAGS: Partial<Record<string, string>> = {
  preset: "preset",
  arch: "arch",
  widths: "widths",
  dataset: "dataset",
  data: "data",
  labels: "labels",
  evaluation: "eval",
  evalData: "eval-data",
  imageSize: "image-size",
  cropScaleMin: "crop-scale",
  blurSigma: "blur-sigma",
  batch: "batch",
  accum: "accum",
  epochs: "epochs",
  steps: "steps",
  lr: "lr",
  warmupEpochs: "warmup-epochs",
  emaBase: "ema-base",
  seed: "seed",
  logEvery: "log-every",
  evalEvery: "eval-every",
  knnBankSize: "eval-bank",
  evalTestSize: "eval-test",
  knnBlockRows: "eval-block-rows",
  probeEpochs: "probe-epochs",
  "loss.kind": "loss",
  "loss.window": "window",
  "loss.k": "k",
  "loss.margin": "margin",
  "loss.gamma": "gamma",
  "loss.temperature": "temperature",
};

/** The fields of a config file, checked; unknown keys and bad values are a {@link UserError}. */
export function checkConfigFields(path: string, json: unknown): Partial<TrainConfig> {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new UserError(
      `--config ${path}: expected a JSON object of training settings ({"steps": 100, ...}), ` +
        `got ${Array.isArray(json) ? "a list" : JSON.stringify(json)}`,
    );
  }
  const fail = (key: string, must: string, value: unknown, known?: string[]) => {
    const flag = FIELD_FLAGS[key];
    throw new UserError(
      `--config ${path}: ` +
        (known
          ? `unknown key "${key}": the keys are the fields of a run's config.json (${
            known.join(", ")
          }); remove it or fix its spelling`
          : `"${key}" must be ${must}, got ${JSON.stringify(value)}: fix it in the file` +
            (flag ? ` or override it with --${flag}` : "")),
    );
  };
  const fields = Object.keys(FIELD_CHECKS);
  for (const [key, value] of Object.entries(json)) {
    // Own keys only: "constructor", "hasOwnProperty", ... are no fields (nor their checks).
    const check = Object.hasOwn(FIELD_CHECKS, key)
      ? FIELD_CHECKS[key as keyof TrainConfig]
      : undefined;
    if (!check) return fail(key, "", value, fields);
    const must = check(value);
    if (must) fail(key, must, value);
  }
  const loss = (json as { loss?: unknown }).loss;
  if (loss !== undefined) {
    if (typeof loss !== "object" || loss === null || Array.isArray(loss)) {
      fail("loss", `an object such as {"kind": "triplet", "window": [2, 10]}`, loss);
    }
    for (const [key, value] of Object.entries(loss as object)) {
      const check = Object.hasOwn(LOSS_CHECKS, key) ? LOSS_CHECKS[key] : undefined;
      if (!check) {
        return fail(`loss.${key}`, "", value, Object.keys(LOSS_CHECKS).map((k) => `loss.${k}`));
      }
      const must = check(value);
      if (must) fail(`loss.${key}`, must, value);
    }
    if (!("kind" in (loss as object))) fail("loss.kind", `one of ${LOSS_KINDS.join(", ")}`, null);
  }
  return json as Partial<TrainConfig>;
}

/** Read and check a --config file; a missing, unreadable or non-JSON file is a {@link UserError}. */
export async function readConfigFile(path: string): Promise<Partial<TrainConfig>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new UserError(
      e instanceof Deno.errors.NotFound
        ? `--config ${path}: no such file (give a JSON file, e.g. a run's config.json)`
        : e instanceof Deno.errors.IsADirectory
        ? `--config ${path} is a directory: give its config.json`
        : `--config ${path}: cannot read it (${(e as Error).message})`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(
      `--config ${path} is not valid JSON (${(e as Error).message}): fix the file`,
    );
  }
  return checkConfigFields(path, json);
}
