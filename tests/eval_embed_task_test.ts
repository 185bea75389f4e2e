/**
 * `deno task eval`, `embed` and `preview` refuse bad input before they touch the GPU, the
 * checkpoint or the data: each case exits 2 with one line naming the problem, prints nothing else
 * and leaves the run directory exactly as it was. The checkpoint is a tiny untrained model
 * (widths 4/4/8/8) saved into a run directory.
 */
import assert from "node:assert/strict";
import { gpuTest, testGpu, tinySslModel } from "./util.ts";
import { saveCheckpoint } from "../models/checkpoint.ts";
import { PRESETS } from "../tasks/presets.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** A run directory with a checkpoint, config.json and a garbage "checkpoint"; its path. */
async function runDirectory(): Promise<string> {
  const dir = await Deno.makeTempDir();
  const gpu = await testGpu();
  const model = tinySslModel(gpu, 1);
  await saveCheckpoint(`${dir}/checkpoint.safetensors`, model, {
    step: 0,
    trainConfig: PRESETS.small,
  });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(PRESETS.small));
  await Deno.writeTextFile(`${dir}/garbage.safetensors`, "not a checkpoint");
  await Deno.mkdir(`${dir}/empty`);
  return dir;
}

/** Every file of a directory (recursively) with its bytes, to compare before and after. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) Object.assign(files, { [path + "/"]: "" }, await snapshot(path));
    else files[path] = Array.from(await Deno.readFile(path)).join(",");
  }
  return files;
}

/** Bad inputs: the task, its arguments (RUN stands for the run directory) and the message. */
const BAD_INPUTS: [string, string[], RegExp][] = [
  ["eval", [], /--checkpoint FILE is required/],
  [
    "eval",
    ["--checkpoint", "RUN/nothing.safetensors"],
    /--checkpoint .*nothing.safetensors: no such file/,
  ],
  ["eval", ["--checkpoint", "RUN/empty"], /--checkpoint .*empty is not a file/],
  [
    "eval",
    ["--checkpoint", "RUN/garbage.safetensors"],
    /--checkpoint .*garbage.safetensors: .*\(give a run's checkpoint.safetensors\)/,
  ],
  [
    "eval",
    ["--checkpoint", "RUN/checkpoint.safetensors", "--knn-k", "0"],
    /--knn-k must be a positive integer/,
  ],
  [
    "eval",
    ["--checkpoint", "RUN/checkpoint.safetensors", "--bank", "-1"],
    /--bank must be a non-negative integer, got "-1"/,
  ],
  [
    "eval",
    ["--checkpoint", "RUN/checkpoint.safetensors", "--test", "x"],
    /--test must be a non-negative integer/,
  ],
  [
    "eval",
    ["--checkpoint", "RUN/checkpoint.safetensors", "--probe-epochs", "1.5"],
    /--probe-epochs must be a non-negative integer/,
  ],
  [
    "eval",
    ["--checkpoint", "RUN/checkpoint.safetensors", "--batch", "0"],
    /--batch must be a positive integer/,
  ],
  [
    "eval",
    ["--checkpoint", "RUN/checkpoint.safetensors", "--map-points", "-3"],
    /--map-points must be a positive integer/,
  ],
  [
    "eval",
    ["--checkpoint", "RUN/checkpoint.safetensors", "--dataset", "imagenet"],
    /--dataset must be one of fashion-mnist/,
  ],
  [
    "eval",
    ["--checkpoint", "RUN/checkpoint.safetensors", "--data", "/nonexistent/fm"],
    /--data \/nonexistent\/fm: no such directory/,
  ],
  [
    "eval",
    ["--checkpoint", "RUN/checkpoint.safetensors", "--out", "/nonexistent/e.json"],
    /--out .*: the directory \/nonexistent does not exist/,
  ],
  [
    "eval",
    ["--checkpoint", "RUN/checkpoint.safetensors", "--out", "RUN/empty"],
    /--out .*empty is a directory/,
  ],
  ["eval", ["--checkpoint", "RUN/checkpoint.safetensors", "--bogus"], /Unknown option '--bogus'/],
  // A dataset that is not where --data says (a DatasetError): exit 2 as well.
  ["eval", [
    "--checkpoint",
    "RUN/checkpoint.safetensors",
    "--dataset",
    "cifar10",
    "--data",
    "RUN/empty",
  ], /empty/],
  ["embed", ["--checkpoint", "RUN/checkpoint.safetensors"], /--out FILE.npy is required/],
  ["embed", ["--out", "RUN/f.npy"], /--checkpoint FILE is required/],
  ["embed", ["--checkpoint", "RUN/nothing.safetensors", "--out", "RUN/f.npy"], /no such file/],
  [
    "embed",
    ["--checkpoint", "RUN/checkpoint.safetensors", "--out", "RUN/f.npy", "--split", "val"],
    /--split must be one of train, test; got "val"/,
  ],
  [
    "embed",
    ["--checkpoint", "RUN/checkpoint.safetensors", "--out", "RUN/f.npy", "--batch", "-2"],
    /--batch must be a positive integer, got "-2"/,
  ],
  [
    "embed",
    ["--checkpoint", "RUN/checkpoint.safetensors", "--out", "/nonexistent/f.npy"],
    /the directory \/nonexistent does not exist/,
  ],
  ["embed", [
    "--checkpoint",
    "RUN/checkpoint.safetensors",
    "--out",
    "RUN/f.npy",
    "--dataset",
    "folder",
  ], /--dataset folder needs --data DIR/],
  ["embed", [
    "--checkpoint",
    "RUN/checkpoint.safetensors",
    "--out",
    "RUN/f.npy",
    "--data",
    "/nonexistent",
  ], /no such directory/],
  ["preview", ["--n", "0", "--out", "RUN/p.png"], /--n must be a positive integer/],
  ["preview", ["--dataset", "folder", "--out", "RUN/p.png"], /--dataset folder needs --data DIR/],
  ["preview", ["--out", "/nonexistent/p.png"], /the directory \/nonexistent does not exist/],
  [
    "preview",
    ["--data", "/nonexistent", "--out", "RUN/p.png"],
    /--data \/nonexistent: no such directory/,
  ],
  ["preview", ["--dataset", "cifar10", "--data", "RUN/empty", "--out", "RUN/p.png"], /empty/],
  ["preview", ["--labels", "maybe", "--out", "RUN/p.png"], /--labels must be one of auto/],
  ["preview", ["--labels", "none", "--out", "RUN/p.png"], /--labels applies to --dataset folder/],
];

Deno.test({
  name:
    "eval, embed, preview: every bad input exits 2 with one line, before the GPU is acquired, " +
    "and the run directory is untouched",
  ...gpuTest,
  fn: async () => {
    const run = await runDirectory();
    const before = await snapshot(run);
    const failures: string[] = [];
    for (const [task, args, message] of BAD_INPUTS) {
      const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `tasks/${task}.ts`, ...args.map((a) => a.replace("RUN", run))],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const [out, err] = [new TextDecoder().decode(stdout), new TextDecoder().decode(stderr)];
      const what = `${task} ${args.join(" ")}: exit ${code}, stdout ${JSON.stringify(out)}, ` +
        `stderr ${JSON.stringify(err)}`;
      // Nothing on stdout: the GPU (which logs its adapter) was never acquired.
      if (code !== 2 || !message.test(err) || err.trim().split("\n").length !== 1 || out !== "") {
        failures.push(what);
      }
    }
    assert.deepEqual(failures, [], failures.join("\n"));
    assert.deepEqual(await snapshot(run), before, "the run directory is untouched");
    await Deno.remove(run, { recursive: true });
  },
});
