/**
 * models/data_parallel.ts: GradientSync and assertSameConfig, in-process on a LocalCollective
 * group of 2 (one GPU, both ranks' models on it) and under `mpiexec -n 2` (one GPU device per
 * rank; skipped without mpiexec). Model: a tiny MLP head 6 -> 8 (BatchNorm1d) -> 3, batch 5.
 */
import assert from "node:assert/strict";
import { assertClose, gpuTest, testGpu } from "./util.ts";
import { LocalCollective } from "../runtime/mpi.ts";
import {
  assertSameConfig,
  broadcastText,
  GradientSync,
  type GradientSyncOptions,
} from "../models/data_parallel.ts";
import { accumulate, rankData, snapshot, tinyModel } from "./mpi/tiny_model.ts";
import { byRank, hasMpiexec, runRanks } from "./mpi/launch.ts";

/** Float32 sums of two values against float64 expectations. */
const SUM_TOL = { atol: 1e-7, rtol: 1e-6 };
/** Two ranks against one process accumulating both micro-batches: the same float32 arithmetic
 * in another order (gradients summed on the GPU vs on the host). */
const ACCUM_TOL = { atol: 1e-6, rtol: 1e-5 };
/** BatchNorm momentum 0.1, one BatchNorm forward per rank per step. */
const DECAY_PER_RANK = 0.9;

function mean2(a: number[][], b: number[][]): number[][] {
  return a.map((row, i) => row.map((v, j) => (v + b[i][j]) / 2));
}

function assertAllClose(got: number[][], expected: number[][], tol: typeof SUM_TOL, what: string) {
  assert.equal(got.length, expected.length, what);
  got.forEach((row, i) => assertClose(row, expected[i], tol, `${what} #${i}`));
}

/** Two ranks (different initial weights) in one process; one step each on its own data. */
async function twoRanksInProcess(options: GradientSyncOptions = {}) {
  const gpu = await testGpu();
  const group = LocalCollective.group(2);
  const ranks = [0, 1].map((rank) => tinyModel(gpu, 7 + rank));
  const syncs = ranks.map(({ mlp }, rank) =>
    new GradientSync(gpu, group[rank], mlp.parameters(), mlp.states(), options)
  );
  const initial = await Promise.all(ranks.map(({ mlp }) => snapshot(gpu, mlp)));
  // Stands for the optimizer's velocity: rank-specific, broadcast with the weights.
  const velocities = [0, 1].map((rank) => gpu.upload([rank + 0.5, 2 - rank], [2]));
  await Promise.all(syncs.map((s, rank) => s.broadcastInitial([velocities[rank]])));
  const velocitiesAfter = await Promise.all(velocities.map((v) => v.read()));
  const broadcast = await Promise.all(ranks.map(({ mlp }) => snapshot(gpu, mlp)));
  ranks.forEach(({ ctx, mlp }, rank) => accumulate(gpu, ctx, mlp, [rankData(rank)]));
  const before = await Promise.all(ranks.map(({ mlp }) => snapshot(gpu, mlp)));
  const losses = [[1, 2], [3, 5.5]].map((l) => gpu.upload(l, [2]));
  const results = await Promise.all(syncs.map((s, rank) => s.allReduce([losses[rank]])));
  const after = await Promise.all(ranks.map(({ mlp }) => snapshot(gpu, mlp)));
  const lossesAfter = await Promise.all(losses.map((l) => l.read()));
  // One process, rank 0's initial weights, both micro-batches accumulated in rank order.
  const reference = tinyModel(gpu, 7);
  accumulate(gpu, reference.ctx, reference.mlp, [rankData(0), rankData(1)]);
  const single = await snapshot(gpu, reference.mlp);
  return {
    gpu,
    ranks,
    syncs,
    initial,
    broadcast,
    velocitiesAfter,
    before,
    after,
    results,
    lossesAfter,
    single,
  };
}

Deno.test({
  name: "GradientSync (LocalCollective, 2 ranks): broadcast, mean gradients, mean states, losses",
  ...gpuTest,
  async fn() {
    const run = await twoRanksInProcess();
    for (const rank of [0, 1]) {
      assert.deepEqual(run.broadcast[rank].values, run.initial[0].values, `rank ${rank} weights`);
      assert.deepEqual(run.broadcast[rank].states, run.initial[0].states, `rank ${rank} states`);
      assert.deepEqual([...run.velocitiesAfter[rank]], [0.5, 2], `rank ${rank} velocity`);
    }
    assert.notDeepEqual(run.initial[1].values, run.initial[0].values, "ranks started equal");
    assert.notDeepEqual(run.before[1].grads, run.before[0].grads, "ranks saw the same data");
    const meanGrads = mean2(run.before[0].grads, run.before[1].grads);
    const meanStates = mean2(run.before[0].states, run.before[1].states);
    for (const rank of [0, 1]) {
      assertAllClose(run.after[rank].grads, meanGrads, SUM_TOL, `rank ${rank} gradient`);
      assertAllClose(run.after[rank].states, meanStates, SUM_TOL, `rank ${rank} state`);
      assert.deepEqual([...run.results[rank].extras[0]], [2, 3.75], `rank ${rank} loss mean`);
      assert.deepEqual([...run.lossesAfter[rank]], [2, 3.75], `rank ${rank} loss tensor`);
      for (const key of ["readMs", "reduceMs", "uploadMs"] as const) {
        assert.ok(run.results[rank][key] >= 0, `${key} ${run.results[rank][key]}`);
      }
    }
    assert.deepEqual(run.after[1].grads, run.after[0].grads, "ranks' gradients differ");
    // The mean of the ranks' gradients is the gradient of one process with --accum 2.
    assertAllClose(run.after[0].grads, run.single.grads, ACCUM_TOL, "vs one process, accum 2");

    // A second step reuses the staging buffers (mapped again after the first step's upload).
    const { gpu, ranks, syncs } = run;
    ranks.forEach(({ ctx, mlp }, rank) => accumulate(gpu, ctx, mlp, [rankData(rank + 2)]));
    const before = await Promise.all(ranks.map(({ mlp }) => snapshot(gpu, mlp)));
    await Promise.all(syncs.map((s) => s.allReduce()));
    const after = await Promise.all(ranks.map(({ mlp }) => snapshot(gpu, mlp)));
    assert.notDeepEqual(before[0].grads, run.before[0].grads, "second step, same gradients");
    for (const rank of [0, 1]) {
      const mean = mean2(before[0].grads, before[1].grads);
      assertAllClose(after[rank].grads, mean, SUM_TOL, `step 2, rank ${rank} gradient`);
    }
    syncs.forEach((s) => s.destroy());
  },
});

Deno.test({
  name: "GradientSync stateDecayPerRank, 100-byte buckets: equals one process with accum 2",
  ...gpuTest,
  async fn() {
    // Buckets of at most 100 bytes: the 8-float BatchNorm tensors share one, the weights go alone.
    const run = await twoRanksInProcess({ stateDecayPerRank: DECAY_PER_RANK, maxBucketBytes: 100 });
    for (const rank of [0, 1]) {
      assert.deepEqual(run.broadcast[rank].values, run.initial[0].values, `rank ${rank} weights`);
      assert.deepEqual([...run.lossesAfter[rank]], [2, 3.75], `rank ${rank} loss tensor`);
    }
    for (const rank of [0, 1]) {
      assertAllClose(run.after[rank].states, run.single.states, ACCUM_TOL, `rank ${rank} state`);
      assertAllClose(run.after[rank].grads, run.single.grads, ACCUM_TOL, `rank ${rank} gradient`);
    }
    // The plain mean would be off by far more than the tolerance: the check can fail.
    const meanStates = mean2(run.before[0].states, run.before[1].states);
    assert.throws(() => assertAllClose(meanStates, run.single.states, ACCUM_TOL, "mean"));
  },
});

Deno.test("assertSameConfig, broadcastText: equal configs pass; a differing one fails everywhere", async () => {
  const config = { batch: 32, loss: { kind: "triplet", temperature: 0.1 }, widths: [8, 16] };
  const same = LocalCollective.group(2);
  await Promise.all(same.map((c) => assertSameConfig(c, JSON.stringify(config))));
  const texts0 = await Promise.all(same.map((c) => broadcastText(c, `from rank ${c.rank} é`)));
  assert.deepEqual(texts0, ["from rank 0 é", "from rank 0 é"]);

  const group = LocalCollective.group(3);
  const texts = [config, config, { ...config, loss: { ...config.loss, temperature: 0.2 } }]
    .map((c) => JSON.stringify(c));
  const outcomes = await Promise.allSettled(group.map((c, r) => assertSameConfig(c, texts[r])));
  const messages = outcomes.map((o) => o.status === "rejected" ? String(o.reason) : "passed");
  // Every rank names the field, so whichever rank's error is printed first says what differs.
  for (const r of [0, 1, 2]) {
    assert.match(
      messages[r],
      /config of rank 2 differs from rank 0's at "loss\.temperature": rank 0 has 0\.1, rank 2 has 0\.2: start every rank with the same flags/,
    );
  }
});

interface FixtureResult {
  rank: number;
  initial: number[][];
  broadcast: number[][];
  before: { grads: number[][]; states: number[][] };
  after: { grads: number[][]; states: number[][] };
  loss: number[];
}

Deno.test({
  name: "GradientSync under mpiexec -n 2: weights broadcast, gradients and states averaged",
  ignore: !hasMpiexec,
  async fn() {
    const job = await runRanks(2, "tests/mpi/data_parallel_fixture.ts", ["sync"]);
    assert.equal(job.code, 0, job.stderr);
    const [r0, r1] = byRank<FixtureResult>(job.stdout, 2);
    assert.notDeepEqual(r1.initial, r0.initial, "ranks started equal");
    assert.deepEqual(r0.broadcast, r0.initial, "rank 0 weights changed");
    assert.deepEqual(r1.broadcast, r0.initial, "rank 1 did not get rank 0's weights");
    const meanGrads = mean2(r0.before.grads, r1.before.grads);
    const meanStates = mean2(r0.before.states, r1.before.states);
    for (const r of [r0, r1]) {
      assertAllClose(r.after.grads, meanGrads, SUM_TOL, `rank ${r.rank} gradient`);
      assertAllClose(r.after.states, meanStates, SUM_TOL, `rank ${r.rank} state`);
      assert.deepEqual(r.loss, [0.5, 1.5], `rank ${r.rank} loss mean`);
    }
    assert.deepEqual(r1.after.grads, r0.after.grads, "ranks' gradients differ");
  },
});

Deno.test({
  name: "assertSameConfig under mpiexec -n 2: a differing config ends the job, naming the field",
  ignore: !hasMpiexec,
  async fn() {
    const job = await runRanks(2, "tests/mpi/data_parallel_fixture.ts", ["mismatch"]);
    assert.notEqual(job.code, 0, job.stdout);
    assert.match(
      job.stderr,
      /config of rank 1 differs from rank 0's at "lr": rank 0 has 0.1, rank 1 has 0.2/,
    );
  },
});
