/**
 * Refactoring guard: short training runs must log bitwise the same numbers (loss, lr, EMA
 * momentum, kNN) as the code that recorded `golden/train_losses.json`. A restructuring of the
 * upper floors must leave them unchanged; a deliberate change of arithmetic (a new kernel, a
 * different summation order) re-records them with `UPDATE_GOLDEN=1 deno task test
 * tests/train_losses_golden_test.ts` and says so in its commit.
 *
 * Bitwise equality holds only on the adapter that recorded the file (floating-point summation
 * order differs between adapters), so on another adapter the test is skipped with a message.
 */
import assert from "node:assert/strict";
import { acquireGpu } from "../runtime/gpu.ts";
import { TINY_TRAIN_FLAGS } from "./util.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const GOLDEN = `${ROOT}tests/golden/train_losses.json`;
const COMMON = TINY_TRAIN_FLAGS;
/** Runs covering one and several micro-batches, the triplet and the InfoNCE paths. */
const RUNS: Record<string, string[]> = {
  "triplet-accum2": [...COMMON, "--accum", "2", "--steps", "5", "--seed", "3"],
  "infonce": [...COMMON, "--loss", "infonce", "--steps", "3", "--seed", "1"],
};

type Logged = [number, number | null, number | null, number | null, number | null][];

async function runTrain(args: string[]): Promise<Logged> {
  const out = await Deno.makeTempDir();
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", `${ROOT}tasks/train.ts`, ...args, "--out", out],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(result.stderr);
  assert.equal(result.code, 0, stderr);
  const text = await Deno.readTextFile(`${out}/metrics.jsonl`);
  await Deno.remove(out, { recursive: true });
  return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l)).map((m) => [
    m.step,
    m.loss ?? null,
    m.lr ?? null,
    m.ema ?? null,
    m.knnTop1 ?? null,
  ]);
}

const gpu = await acquireGpu();
const adapter = gpu.adapterName;
const golden = JSON.parse(await Deno.readTextFile(GOLDEN).catch(() => "null")) as
  | { adapter: string; runs: Record<string, Logged> }
  | null;
const update = Deno.env.get("UPDATE_GOLDEN") === "1";

Deno.test({
  name: "train task: short runs log bitwise the recorded losses, lr, EMA and kNN " +
    "(triplet with 2 micro-batches, InfoNCE)",
  ignore: !update && golden?.adapter !== adapter,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const runs: Record<string, Logged> = {};
    for (const [name, args] of Object.entries(RUNS)) runs[name] = await runTrain(args);
    if (update) {
      await Deno.writeTextFile(GOLDEN, JSON.stringify({ adapter, runs }, null, 1) + "\n");
      return;
    }
    for (const name of Object.keys(RUNS)) {
      const got = runs[name];
      const expected = golden!.runs[name];
      assert.equal(got.length, expected.length, `${name}: number of logged lines`);
      got.forEach((line, i) =>
        assert.deepEqual(line, expected[i], `${name}, line ${i} (step ${line[0]}) differs`)
      );
    }
  },
});
if (!update && golden?.adapter !== adapter) {
  console.log(
    `train_losses_golden: recorded on ${golden?.adapter ?? "(no file)"}, this is ${adapter}: ` +
      "skipped (bitwise equality holds only on the recording adapter)",
  );
}
