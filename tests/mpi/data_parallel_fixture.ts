/**
 * One rank of tests/data_parallel_test.ts under `mpiexec -n 2`: `sync` builds the tiny model with
 * a rank-dependent seed, broadcasts rank 0's weights, runs one step on the rank's own data,
 * all-reduces and prints one JSON line; `mismatch` gives rank 1 another config.
 */
import { acquireGpu } from "../../runtime/gpu.ts";
import { openMpi } from "../../runtime/mpi.ts";
import { assertSameConfig, GradientSync } from "../../models/data_parallel.ts";
import { accumulate, rankData, snapshot, tinyModel } from "./tiny_model.ts";

const mpi = openMpi();
const scenario = Deno.args[0];

if (scenario === "mismatch") {
  await assertSameConfig(mpi, JSON.stringify({ batch: 8, lr: mpi.rank === 0 ? 0.1 : 0.2 }));
  console.log(`rank ${mpi.rank} accepted a differing config`);
} else if (scenario === "sync") {
  await assertSameConfig(mpi, JSON.stringify({ batch: 8, lr: 0.1 }));
  const gpu = await acquireGpu();
  const { ctx, mlp } = tinyModel(gpu, 7 + mpi.rank);
  const sync = new GradientSync(gpu, mpi, mlp.parameters(), mlp.states());
  const initial = (await snapshot(gpu, mlp)).values;
  await sync.broadcastInitial();
  const broadcast = (await snapshot(gpu, mlp)).values;
  accumulate(gpu, ctx, mlp, [rankData(mpi.rank)]);
  const before = await snapshot(gpu, mlp);
  const loss = gpu.upload([mpi.rank, 3 * mpi.rank], [2]);
  await sync.allReduce([loss]);
  const after = await snapshot(gpu, mlp);
  console.log(JSON.stringify({
    rank: mpi.rank,
    initial,
    broadcast,
    before: { grads: before.grads, states: before.states },
    after: { grads: after.grads, states: after.states },
    loss: [...await loss.read()],
  }));
  mpi.finalize();
} else {
  throw new Error(`unknown scenario ${scenario}`);
}
