/**
 * `deno task export --checkpoint FILE [--out DIR] [--name NAME]`: the checkpoint's backbone for
 * PyTorch: `NAME.safetensors` (backbone tensors only, torchvision names) and `NAME.py`, a generated
 * module needing only torch that builds the exact backbone and loads the weights strictly.
 */
import { parseArgs } from "node:util";
import { readCheckpoint } from "../models/checkpoint.ts";
import { writeBackboneExport } from "../models/export.ts";
import type { SslModelConfig } from "../models/ssl.ts";
import { loadDataset } from "../data/dataset.ts";
import { runMain, UserError } from "./cli.ts";
import type { TrainConfig } from "./presets.ts";

const HELP = `usage: deno task export --checkpoint FILE [flags]
  --checkpoint FILE   a tritrain checkpoint (checkpoint.safetensors of a run)
  --out DIR           where to write NAME.safetensors and NAME.py (default: the checkpoint's folder)
  --name NAME         file and Python module name (default backbone)
  --overwrite         replace existing NAME.safetensors / NAME.py

Then, in Python (only torch needed):
  import sys; sys.path.insert(0, "DIR")
  import backbone; model = backbone.load()   # strict=True, eval mode`;

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The training normalisation, from the run's dataset (undefined when it cannot be opened). */
async function normalisationOf(
  run: TrainConfig | undefined,
): Promise<{ mean?: number[]; std?: number[] }> {
  if (!run?.dataset) return {};
  try {
    const dataset = await loadDataset(run.dataset, {
      dir: run.data,
      imageSize: run.imageSize,
      split: "test",
    });
    dataset.close?.();
    return { mean: dataset.mean, std: dataset.std };
  } catch (e) {
    console.warn(
      `export: warning: cannot open the run's ${run.dataset} data (${(e as Error).message}); ` +
        `the Python file will say MEAN = None`,
    );
    return {};
  }
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: Deno.args,
      options: {
        checkpoint: { type: "string" },
        out: { type: "string" },
        name: { type: "string" },
        overwrite: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    throw new UserError(`${(e as Error).message}\n${HELP}`);
  }
  const flags = parsed.values;
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  if (!flags.checkpoint) throw new UserError(`--checkpoint FILE is required\n${HELP}`);
  const name = flags.name ?? "backbone";
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
    throw new UserError(
      `--name must be a Python module name (letters, digits, _; not starting with a digit), ` +
        `got ${JSON.stringify(name)}`,
    );
  }
  const dir = flags.out ??
    (flags.checkpoint.includes("/")
      ? flags.checkpoint.slice(0, flags.checkpoint.lastIndexOf("/"))
      : ".");
  const targets = [`${dir}/${name}.safetensors`, `${dir}/${name}.py`];
  if (!flags.overwrite) {
    for (const target of targets) {
      if (await exists(target)) {
        throw new UserError(`${target} exists; pass --overwrite to replace it or --name NEW`);
      }
    }
  }
  const { file, config, state } = await readCheckpoint(flags.checkpoint).catch((e) => {
    throw new UserError((e as Error).message);
  });
  const backbone = (config as SslModelConfig)?.backbone;
  if (!backbone?.arch) throw new UserError(`${flags.checkpoint}: metadata has no backbone config`);
  const run = state.trainConfig as TrainConfig | undefined;
  await Deno.mkdir(dir, { recursive: true });
  const written = await writeBackboneExport(
    file,
    backbone,
    { imageSize: run?.imageSize ?? 224, ...await normalisationOf(run) },
    dir,
    name,
    flags.checkpoint,
  ).catch((e) => {
    throw new UserError((e as Error).message);
  });
  console.log(`wrote ${written.weights}\nwrote ${written.python}`);
  console.log(
    `in Python: import sys; sys.path.insert(0, ${JSON.stringify(dir)}); ` +
      `import ${name}; model = ${name}.load()`,
  );
  return 0;
}

if (import.meta.main) runMain("export", main);
