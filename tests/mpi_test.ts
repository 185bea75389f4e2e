/**
 * runtime/mpi.ts: the MPI binding under `mpiexec -n 2` (collectives, errors, faults that must end
 * the whole job) and the in-process LocalCollective. The mpiexec tests skip when `mpiexec` is
 * missing (`apt-get install mpich`; CI installs it).
 */
import assert from "node:assert/strict";
import { LocalCollective, openMpi } from "../runtime/mpi.ts";
import { byRank, hasMpiexec, runRanks } from "./mpi/launch.ts";

const FIXTURE = "tests/mpi/collective_fixture.ts";
const mpiTest = { ignore: !hasMpiexec };
/** A failure must end every rank well before this (MPICH's hydra takes about 1 s here). */
const FAULT_SECONDS = 15;

interface CollectiveResult {
  rank: number;
  size: number;
  ticksDuringWait: number;
  small: number[];
  large: number[];
  floats: number[];
  bytes: number[];
  barrierWaitMs: number;
  invalidRoot: string;
  finalizeInFlight: string;
}

Deno.test({
  name: "mpi: 2 ranks all-reduce (5 values; 1000 in 64-byte chunks), broadcast, barrier, errors",
  ...mpiTest,
  async fn() {
    const job = await runRanks(2, FIXTURE, ["collectives"]);
    assert.deepEqual(job.code, 0, job.stderr);
    for (const result of byRank<CollectiveResult>(job.stdout, 2)) {
      const who = `rank ${result.rank}`;
      assert.deepEqual(result.size, 2, who);
      // Every value is exact in float32, so the sums are compared exactly.
      assert.deepEqual(result.small, [1, 2, 3, 4, 5].map((i) => 3 * i + 0.5), `${who} small sum`);
      assert.deepEqual(
        result.large,
        Array.from({ length: 1000 }, (_, i) => 0.5 * i),
        `${who} large`,
      );
      assert.deepEqual(result.floats, Array.from({ length: 37 }, (_, i) => i / 8), `${who} floats`);
      assert.deepEqual(
        result.bytes,
        Array.from({ length: 301 }, (_, i) => i % 251),
        `${who} bytes`,
      );
      assert(
        /MPI_Bcast failed \(MPI error \d+\): Invalid root/.test(result.invalidRoot),
        `${who}: an invalid root should be an MpiError naming it, got: ${result.invalidRoot}`,
      );
    }
    for (const result of byRank<CollectiveResult>(job.stdout, 2)) {
      assert.match(result.finalizeInFlight, /finalize: 1 collective\(s\) still in flight/);
    }
    const rank0 = byRank<CollectiveResult>(job.stdout, 2)[0];
    // Rank 1 joins the first all-reduce 400 ms late; rank 0's 20 ms timer ran meanwhile.
    assert(rank0.ticksDuringWait >= 5, `event loop blocked: ${rank0.ticksDuringWait} ticks`);
    // Rank 1 enters the barrier 300 ms late (timers may fire a little early: 250 ms).
    assert(rank0.barrierWaitMs >= 250, `rank 0 left the barrier after ${rank0.barrierWaitMs} ms`);
  },
});

for (
  const [scenario, what, evidence] of [
    ["throw", "an uncaught exception on rank 1", "rank 1 fails on purpose"],
    ["abort", "rank 1 calling abort(3)", "MPI_Abort(MPI_COMM_WORLD, 3)"],
    ["kill", "rank 1 killed with SIGKILL", "BAD TERMINATION"],
    // mpiexec alone would end this job with code 0, rank 0 killed silently.
    ["exit0", "rank 1 exiting 0 before finalize", "rank 1 ended before MPI finalize"],
  ] as const
) {
  Deno.test({
    name: `mpi: ${what} ends the job non-zero within seconds (rank 0 waits in an all-reduce)`,
    ...mpiTest,
    async fn() {
      const job = await runRanks(2, FIXTURE, [scenario], 2 * FAULT_SECONDS);
      assert(job.code !== 0, `job exited 0; stdout:\n${job.stdout}`);
      assert(job.seconds < FAULT_SECONDS, `job took ${job.seconds.toFixed(1)} s to end`);
      assert(!job.stdout.includes("should never end"), job.stdout);
      assert(
        job.stderr.includes(evidence) || job.stdout.includes(evidence),
        `expected "${evidence}" in the output; stderr:\n${job.stderr}`,
      );
    },
  });
}

Deno.test("mpi: importing runtime/mpi.ts needs no permission and opens no library", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", new URL("./mpi/import_only.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  assert.match(new TextDecoder().decode(out.stdout), /LocalCollective,.*openMpi/);
});

Deno.test("mpi: a missing MPI library is one message naming the package", () => {
  let message = "";
  try {
    openMpi({ library: "/nonexistent/libmpich.so.12" });
  } catch (error) {
    message = (error as Error).message;
  }
  assert(message.startsWith("MPI library /nonexistent/libmpich.so.12 not found"), message);
  assert(message.includes("`apt-get install mpich`"), message);
});

Deno.test("LocalCollective: a group of 3 sums in rank order, broadcasts, and fails together", async () => {
  const group = LocalCollective.group(3);
  const data = group.map((c) => Float32Array.from([c.rank + 1, 0.5 * c.rank, -c.rank]));
  await Promise.all(group.map((c, r) => c.allReduceSum(data[r])));
  for (const d of data) assert.deepEqual([...d], [6, 1.5, -3]);
  const bytes = group.map((c) => Uint8Array.from([c.rank, 7 * c.rank]));
  await Promise.all(group.map((c, r) => c.broadcast(bytes[r], 2)));
  for (const b of bytes) assert.deepEqual([...b], [2, 14]);
  await Promise.all(group.map((c) => c.barrier()));
  // Rank 0 waits in an all-reduce that rank 1 aborts: the wait fails instead of hanging.
  const waiting = group[0].allReduceSum(new Float32Array(1));
  group[1].abort(4);
  await assert.rejects(waiting, /rank 1 aborted the group with code 4/);
  await assert.rejects(group[2].barrier(), /aborted/);
});
