/**
 * setup.sh's decisions, run against stub commands (no root, no network): Node.js and npm are
 * installed from Debian only when npm is missing (Debian's npm conflicts with NodeSource's Node,
 * which ships its own npm), and `npm ci` is skipped when node_modules already matches the lockfile.
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;
const TOOLS = ["uname", "id", "cut", "head", "dirname", "ldconfig", "mkdir", "chmod"];

async function which(tool: string): Promise<string> {
  for (const dir of ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]) {
    try {
      await Deno.stat(`${dir}/${tool}`);
      return `${dir}/${tool}`;
    } catch { /* next */ }
  }
  throw new Error(`${tool} not found`);
}

async function stub(dir: string, name: string, body: string): Promise<void> {
  await Deno.writeTextFile(`${dir}/${name}`, `#!/bin/bash\n${body}\n`, { mode: 0o755 });
}

/** Run setup.sh in a scratch copy with only the given stubs on PATH; returns output and calls. */
async function runSetup(options: { node: boolean; npm: boolean; installed?: boolean }) {
  const dir = await Deno.makeTempDir();
  const bin = `${dir}/bin`;
  const project = `${dir}/project`;
  await Deno.mkdir(bin);
  await Deno.mkdir(project);
  for (const tool of TOOLS) await Deno.symlink(await which(tool), `${bin}/${tool}`);
  await Deno.copyFile(`${ROOT}/setup.sh`, `${project}/setup.sh`);
  await Deno.writeTextFile(`${project}/package.json`, "{}\n");
  await Deno.writeTextFile(`${project}/package-lock.json`, "{}\n");
  const log = `${dir}/calls.log`;
  await stub(bin, "apt-get", `echo "apt-get $*" >> ${log}`);
  await stub(bin, "sudo", `"$@"`);
  if (options.node) await stub(bin, "node", `echo v20.0.0`);
  if (options.npm) {
    await stub(
      bin,
      "npm",
      `if [ "$1" = --version ]; then echo 9.2.0; exit 0; fi
echo "npm $*" >> ${log}
mkdir -p node_modules/deno
printf '#!/bin/bash\\necho deno 2.9.6\\n' > node_modules/deno/deno
chmod +x node_modules/deno/deno
echo '{}' > node_modules/.package-lock.json`,
    );
  }
  const run = () =>
    new Deno.Command("/bin/bash", {
      args: [`${project}/setup.sh`],
      env: { PATH: bin },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
  let result = await run();
  if (options.installed) result = await run(); // the second run of an idempotent script
  const decoder = new TextDecoder();
  const output = decoder.decode(result.stdout) + decoder.decode(result.stderr);
  let calls: string[] = [];
  try {
    calls = (await Deno.readTextFile(log)).trim().split("\n");
  } catch { /* no calls */ }
  await Deno.remove(dir, { recursive: true });
  return { code: result.code, output, calls };
}

/** Packages apt-get was asked to install. */
function installed(calls: string[]): string[] {
  return calls.filter((c) => c.startsWith("apt-get") && c.includes(" install "))
    .flatMap((c) => c.split(" ").slice(2).filter((w) => !w.startsWith("-") && w !== "install"));
}

Deno.test("setup.sh: no Node.js at all -> installs nodejs and npm from apt", async () => {
  const { calls, output } = await runSetup({ node: false, npm: false });
  assert.ok(installed(calls).includes("nodejs"), output);
  assert.ok(installed(calls).includes("npm"), output);
});

Deno.test("setup.sh: node without npm -> installs npm only, never a second nodejs", async () => {
  const { calls, output } = await runSetup({ node: true, npm: false });
  assert.ok(installed(calls).includes("npm"), output);
  assert.ok(!installed(calls).includes("nodejs"), output);
});

Deno.test("setup.sh: npm present -> neither nodejs nor npm from apt; npm ci runs", async () => {
  const { code, calls, output } = await runSetup({ node: true, npm: true });
  assert.equal(code, 0, output);
  assert.ok(!installed(calls).includes("nodejs") && !installed(calls).includes("npm"), output);
  assert.deepEqual(calls.filter((c) => c.startsWith("npm")), ["npm ci --no-audit --no-fund"]);
});

Deno.test("setup.sh: a second run skips npm ci when node_modules matches the lockfile", async () => {
  const { code, calls, output } = await runSetup({ node: true, npm: true, installed: true });
  assert.equal(code, 0, output);
  assert.equal(calls.filter((c) => c.startsWith("npm ci")).length, 1, output);
  assert.match(output, /node_modules up to date \(deno 2\.9\.6\)/);
});
