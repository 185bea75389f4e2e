/**
 * One rank of the MPI tests (tests/mpi_test.ts runs it under `mpiexec -n 2`). The scenario is the
 * first argument; `collectives` prints one JSON line per rank, the fault scenarios end the job.
 */
import { MpiError, openMpi } from "../../runtime/mpi.ts";

const scenario = Deno.args[0];
// A small chunk, so the 1000-value all-reduce and broadcast go through MPI in many pieces.
const mpi = openMpi({ maxChunkBytes: 64 });
const { rank, size } = mpi;

if (scenario === "collectives") {
  // The all-reduce runs on a worker thread: rank 0's timers keep firing while it waits for
  // rank 1, which joins 400 ms late.
  let ticksDuringWait = 0;
  const ticker = setInterval(() => ticksDuringWait++, 20);
  if (rank === 1) await new Promise((resolve) => setTimeout(resolve, 400));
  await mpi.allReduceSum(new Float32Array(1));
  clearInterval(ticker);
  // Rank r contributes (r + 1) * (i + 1) + 0.25 at index i.
  const small = Float32Array.from({ length: 5 }, (_, i) => (rank + 1) * (i + 1) + 0.25);
  await mpi.allReduceSum(small);
  const large = Float32Array.from({ length: 1000 }, (_, i) => rank === 0 ? i : -0.5 * i);
  await mpi.allReduceSum(large);
  // Broadcast from rank 1: its values overwrite rank 0's (lengths not a multiple of the chunk).
  const floats = Float32Array.from({ length: 37 }, (_, i) => rank === 1 ? i / 8 : -1);
  await mpi.broadcast(floats, 1);
  const bytes = Uint8Array.from({ length: 301 }, (_, i) => rank === 1 ? i % 251 : 0);
  await mpi.broadcast(bytes, 1);
  // Rank 1 enters the barrier 300 ms late: rank 0 must wait for it.
  if (rank === 1) await new Promise((resolve) => setTimeout(resolve, 300));
  const barrierStart = performance.now();
  await mpi.barrier();
  const barrierWaitMs = performance.now() - barrierStart;
  let invalidRoot = "";
  try {
    await mpi.broadcast(new Uint8Array(4), size + 3);
  } catch (error) {
    invalidRoot = error instanceof MpiError ? error.message : `not an MpiError: ${error}`;
  }
  let finalizeInFlight = "";
  const inFlight = mpi.barrier();
  try {
    mpi.finalize();
  } catch (error) {
    finalizeInFlight = (error as Error).message;
  }
  await inFlight;
  mpi.finalize();
  console.log(JSON.stringify({
    rank,
    size,
    ticksDuringWait,
    small: [...small],
    large: [...large],
    floats: [...floats],
    bytes: [...bytes],
    barrierWaitMs,
    invalidRoot,
    finalizeInFlight,
  }));
} else if (["throw", "abort", "kill", "exit0"].includes(scenario)) {
  await mpi.barrier();
  if (rank === 1) {
    // Give rank 0 time to block inside the all-reduce that rank 1 never joins.
    await new Promise((resolve) => setTimeout(resolve, 300));
    if (scenario === "throw") throw new Error("rank 1 fails on purpose");
    if (scenario === "abort") mpi.abort(3);
    if (scenario === "exit0") Deno.exit(0); // without finalize
    Deno.kill(Deno.pid, "SIGKILL");
  }
  await mpi.allReduceSum(new Float32Array(4));
  console.log(`rank ${rank} finished an all-reduce that should never end`);
} else {
  throw new Error(`unknown scenario ${scenario}`);
}
