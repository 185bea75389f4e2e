/**
 * A run's departures, as config.json lists them and the run prints them: the preset's own
 * departures (tasks/presets.ts) while the run keeps the values they describe, and for every value
 * the run changes (by flag or --config) a line with the value used, the preset's and the released
 * recipe's. A function of the resolved config alone, so a run repeated from its config.json lists
 * the same lines.
 */
import { DEPARTURE_FIELDS, PRESETS, type TrainConfig } from "./presets.ts";

/** The released recipe (METHOD.md on one device), the reference in the generated lines. */
const RELEASED = "resnet50-imagenet";

/** Fields that are not part of the recipe: changing them is not a departure. */
const NOT_RECIPE = new Set<keyof TrainConfig>([
  "preset",
  "deviations",
  "overrides",
  "data",
  "labels",
  "evaluation",
  "evalData",
  "seed",
  "logEvery",
  "knnBlockRows",
]);

/** Fields described together, in one line. */
const ASPECTS: { fields: (keyof TrainConfig)[]; describe: (c: TrainConfig) => string }[] = [
  {
    fields: ["steps", "epochs"],
    describe: (c) => c.steps !== undefined ? `${c.steps} steps` : `${c.epochs} epochs`,
  },
  {
    fields: ["batch", "accum", "ranks"],
    describe: (c) =>
      `batch ${c.batch} x accum ${c.accum} x ${c.ranks} process${c.ranks > 1 ? "es" : ""} = ` +
      `${c.batch * c.accum * c.ranks} images per step`,
  },
  {
    fields: ["loss"],
    describe: (c) =>
      `loss ${c.loss.kind} (${
        Object.entries(c.loss).filter(([key, value]) => key !== "kind" && value !== undefined)
          .map(([key, value]) => `${key} ${Array.isArray(value) ? `[${value}]` : value}`)
          .join(", ")
      })`,
  },
];

/** The aspect a field belongs to (a single-field one for most). */
function aspectOf(field: keyof TrainConfig) {
  return ASPECTS.find((a) => a.fields.includes(field)) ?? {
    fields: [field],
    describe: (c: TrainConfig) => {
      const value = c[field];
      return `${field} ${
        value === undefined ? "unset" : Array.isArray(value) ? `[${value}]` : String(value)
      }`;
    },
  };
}

/** Equal as JSON, whatever the order of object keys. */
function same(a: unknown, b: unknown): boolean {
  const canonical = (v: unknown): unknown =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical((v as never)[k])]))
      : v;
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

/** The fields of `config` whose value differs from its preset's. */
export function changedFields(config: TrainConfig): (keyof TrainConfig)[] {
  const preset = PRESETS[config.preset];
  const fields = new Set([...Object.keys(preset), ...Object.keys(config)]) as Set<
    keyof TrainConfig
  >;
  return [...fields].filter((f) => !NOT_RECIPE.has(f) && !same(config[f], preset[f]));
}

/** The departures of a resolved config (see the module comment). */
export function departuresOf(config: TrainConfig): string[] {
  const preset = PRESETS[config.preset];
  const released = PRESETS[RELEASED];
  const changed = new Set(changedFields(config));
  const described = new Set<string>();
  const lines: string[] = [];
  const describe = (field: keyof TrainConfig) => {
    const aspect = aspectOf(field);
    const key = aspect.fields.join(",");
    if (described.has(key)) return;
    described.add(key);
    lines.push(
      aspectLine(config, preset, released, aspect, aspect.fields.some((f) => changed.has(f))),
    );
  };
  for (const text of preset.deviations) {
    const fields = DEPARTURE_FIELDS.get(text) ?? [];
    if (fields.every((f) => !changed.has(f))) lines.push(text);
    else fields.forEach(describe);
  }
  for (const field of changed) describe(field);
  return lines;
}

/** One generated line: the run's value, the preset's and the released recipe's. */
function aspectLine(
  config: TrainConfig,
  preset: TrainConfig,
  released: TrainConfig,
  aspect: ReturnType<typeof aspectOf>,
  changed: boolean,
): string {
  const ours = aspect.describe(config);
  const shrunk = shrunkWindow(config, preset);
  if (aspect.fields.includes("loss") && shrunk) return shrunk;
  const notes = [
    changed ? `preset ${preset.preset}: ${aspect.describe(preset)}` : `as preset ${preset.preset}`,
  ];
  if (aspect.fields.includes("lr") && changed) {
    const ratio = (config.batch * config.accum * config.ranks) /
      (preset.batch * preset.accum * preset.ranks);
    // Within rounding: resolveConfig multiplies before it divides.
    if (ratio !== 1 && Math.abs(config.lr - preset.lr * ratio) <= 1e-12 * Math.abs(config.lr)) {
      notes.push("scaled with the images per step");
    }
  }
  if (preset.preset !== RELEASED) notes.push(`released recipe: ${aspect.describe(released)}`);
  return `${ours} (${notes.join("; ")})`;
}

/** The preset's window shrunk to a batch too small for it (the only change to the loss). */
function shrunkWindow(config: TrainConfig, preset: TrainConfig): string | undefined {
  const window = preset.loss.window;
  const negatives = config.batch - 1;
  if (preset.loss.kind !== "triplet" || !window || window[1] <= negatives) return undefined;
  const shrunk: [number, number] = [Math.min(window[0], negatives), negatives];
  if (!same(config.loss, { ...preset.loss, window: shrunk })) return undefined;
  return `window [${window}] shrunk to [${shrunk}]: a batch of ${config.batch} has only ` +
    `${negatives} negatives per image`;
}
