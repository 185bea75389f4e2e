/** Launching fixture scripts under `mpiexec` for the MPI tests. */

const ROOT = new URL("../../", import.meta.url).pathname;

/** Whether `mpiexec` is on the PATH (CI installs Debian's `mpich`; tests skip without it). */
export const hasMpiexec: boolean = (() => {
  try {
    return new Deno.Command("mpiexec", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();
if (!hasMpiexec) {
  console.warn("mpiexec not found: the mpiexec tests are ignored (`apt-get install mpich`)");
}

/** How a job ended. */
export interface JobResult {
  code: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

/**
 * Run `mpiexec -n ranks deno run -A <script> ...args` from the repository root; the job is killed
 * after `timeoutSeconds` (a hang then shows as a long `seconds` and a non-zero code).
 */
export async function runRanks(
  ranks: number,
  script: string,
  args: string[],
  timeoutSeconds = 60,
): Promise<JobResult> {
  const started = performance.now();
  const command = new Deno.Command("mpiexec", {
    args: [
      "-n",
      String(ranks),
      Deno.execPath(),
      "run",
      "-A",
      "--unstable-webgpu",
      `${ROOT}${script}`,
      ...args,
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutSeconds * 1000),
  });
  const out = await command.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
    seconds: (performance.now() - started) / 1000,
  };
}

/** The JSON lines a job printed, indexed by their `rank` field. */
export function byRank<T extends { rank: number }>(stdout: string, ranks: number): T[] {
  const rows = stdout.split("\n").filter((line) => line.startsWith("{")).map((line) =>
    JSON.parse(line) as T
  );
  const out: T[] = [];
  for (const row of rows) out[row.rank] = row;
  for (let r = 0; r < ranks; r++) {
    if (!out[r]) throw new Error(`no result line from rank ${r}; stdout:\n${stdout}`);
  }
  return out;
}
