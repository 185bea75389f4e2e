/**
 * bench/device-check.sh refuses bad options before it unpacks or runs anything: one line naming
 * the option and exit 2 (a missing value used to abort under `set -u` with exit 1).
 */
import assert from "node:assert/strict";

const SCRIPT = new URL("../bench/device-check.sh", import.meta.url).pathname;

async function check(args: string[]): Promise<{ code: number; stderr: string }> {
  const result = await new Deno.Command("bash", {
    args: [SCRIPT, ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  return { code: result.code, stderr: new TextDecoder().decode(result.stderr) };
}

Deno.test("device-check: an option without its value exits 2 naming the option", async () => {
  for (const option of ["--out", "--tests", "--parts", "--kernel-plan"]) {
    const last = await check([option]);
    assert.equal(last.code, 2, `${option} last: ${last.stderr}`);
    assert.match(last.stderr, new RegExp(`${option} needs a value`));
    // Followed by another option instead of a value.
    const followed = await check([option, "--quick"]);
    assert.equal(followed.code, 2, `${option} --quick: ${followed.stderr}`);
    assert.match(followed.stderr, new RegExp(`${option} needs a value`));
  }
});

Deno.test("device-check: an unknown option or kernel plan exits 2 with the reason", async () => {
  const unknown = await check(["--bogus"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown option --bogus/);
  const plan = await check(["--kernel-plan", "fast"]);
  assert.equal(plan.code, 2);
  assert.match(plan.stderr, /--kernel-plan must be one of auto, gpu, cpu; got "fast"/);
});
