/**
 * The kernel profiler around known work: fill twice, scale once, one 64x64x64 matmul. Each mode
 * must report exactly those kernels, attributed to the wrappers that dispatched them, with those
 * call counts, non-negative times and shares that sum to 1, and must leave the GPU as it found it
 * (no hook, the normal dispatch).
 */
import assert, { deepEqual, equal, rejects, throws } from "node:assert/strict";
import { fill, scale } from "../kernels/elementwise.ts";
import { matmul } from "../kernels/matmul.ts";
import { Gpu } from "../runtime/gpu.ts";
import { KernelProfiler, type ProfileMode } from "../runtime/profiler.ts";
import { formatProfile } from "../bench/profile.ts";
import { gpuTest, Rng, testGpu } from "./util.ts";

const SIZE = 64;
/** lavapipe and most GPUs have timestamp queries; the timestamp tests are skipped elsewhere. */
const timestampsAvailable = (await testGpu()).hasTimestamps;

async function profileKnownWork(mode: ProfileMode) {
  const gpu = await testGpu();
  const rng = new Rng(3);
  const a = gpu.upload(Float32Array.from({ length: SIZE * SIZE }, () => rng.normal()), [
    SIZE,
    SIZE,
  ]);
  const b = gpu.empty([SIZE, SIZE]);
  const c = gpu.empty([SIZE, SIZE]);
  // Compile the pipelines outside the profile, as a warm-up would.
  fill(gpu, b, 0);
  scale(gpu, a, 2, b);
  matmul(gpu, a, b, c);
  await gpu.sync();
  const dispatchesBefore = gpu.dispatchCount;

  const profiler = new KernelProfiler(mode);
  profiler.start(gpu);
  fill(gpu, c, 1);
  fill(gpu, b, 0.5);
  scale(gpu, a, 2, b);
  matmul(gpu, a, b, c);
  const report = await profiler.stop();

  // The profiled work still computed the right thing: c = a · (2a).
  const [gotA, gotC] = await gpu.read([a, c]);
  const expected00 = Array.from({ length: SIZE }, (_, k) => gotA[k] * 2 * gotA[k * SIZE])
    .reduce((x, y) => x + y, 0);
  assert(Math.abs(gotC[0] - expected00) <= 1e-3 + 1e-4 * Math.abs(expected00), `c[0]=${gotC[0]}`);
  equal(gpu.dispatchObserverCount, 0, "the dispatch observer is removed");
  equal(Object.hasOwn(gpu, "dispatch"), false, "the recording dispatch is removed");
  equal(gpu.dispatch, Gpu.prototype.dispatch);
  for (const t of [a, b, c]) t.release();
  return { report, dispatches: gpu.dispatchCount - dispatchesBefore };
}

function checkReport(report: Awaited<ReturnType<typeof profileKnownWork>>["report"]) {
  const calls = Object.fromEntries(report.rows.map((r) => [`${r.kernel} by ${r.caller}`, r.calls]));
  deepEqual(calls, {
    "elementwise:fill by fill": 2,
    "elementwise:scale by scale": 1,
    "matmul:main by matmul": 1,
  });
  for (const r of report.rows) {
    assert(Number.isFinite(r.totalMs) && r.totalMs >= 0, `${r.kernel}: ${r.totalMs} ms`);
    assert(r.share >= 0 && r.share <= 1, `${r.kernel}: share ${r.share}`);
  }
  const sumMs = report.rows.reduce((s, r) => s + r.totalMs, 0);
  assert(Math.abs(sumMs - report.kernelMs) <= 1e-9 * Math.max(1, sumMs));
  if (report.kernelMs > 0) {
    const shares = report.rows.reduce((s, r) => s + r.share, 0);
    assert(Math.abs(shares - 1) < 1e-9, `shares sum to ${shares}`);
  }
  for (let i = 1; i < report.rows.length; i++) {
    assert(report.rows[i - 1].totalMs >= report.rows[i].totalMs, "rows sorted by total time");
  }
  const table = formatProfile(report);
  for (const r of report.rows) {
    assert(table.includes(`| ${r.kernel} | ${r.caller} | ${r.calls} |`), table);
  }
}

Deno.test("profiler (sync replay): fill x2, scale, matmul", gpuTest, async () => {
  const { report, dispatches } = await profileKnownWork("sync-replay");
  equal(report.mode, "sync-replay");
  // Four during the work, four more when stop() replays them.
  equal(dispatches, 8);
  checkReport(report);
  // Each replayed dispatch waited for the GPU: its time cannot be zero.
  for (const r of report.rows) assert(r.totalMs > 0, `${r.kernel}: ${r.totalMs} ms`);
});

Deno.test({
  name: "profiler (timestamp queries): fill x2, scale, matmul",
  ignore: !timestampsAvailable,
  ...gpuTest,
  fn: async () => {
    const { report, dispatches } = await profileKnownWork("timestamps");
    equal(report.mode, "timestamps");
    equal(dispatches, 4);
    checkReport(report);
    const ms = Object.fromEntries(report.rows.map((r) => [r.kernel, r.totalMs]));
    assert(ms["matmul:main"] > 0, `matmul took ${ms["matmul:main"]} ms`);
  },
});

Deno.test({
  name: "profiler (timestamp queries) refuses a device without them",
  ignore: timestampsAvailable,
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    throws(() => new KernelProfiler("timestamps").start(gpu), /timestamp-query/);
  },
});

Deno.test({
  name: "profiler (timestamp queries): 2100 dispatches span two query sets",
  ignore: !timestampsAvailable,
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const t = gpu.empty([16]);
    const profiler = new KernelProfiler("timestamps");
    profiler.start(gpu);
    for (let i = 0; i < 2100; i++) fill(gpu, t, i);
    const report = await profiler.stop();
    deepEqual(report.rows.map((r) => [r.kernel, r.caller, r.calls]), [
      ["elementwise:fill", "fill", 2100],
    ]);
    assert(report.kernelMs >= 0 && Number.isFinite(report.kernelMs));
    // The last fill ran last: the profiled work was not disturbed.
    equal((await t.read())[0], 2099);
    t.release();
  },
});

Deno.test("profiler refuses to nest or to stop unstarted", gpuTest, async () => {
  const gpu = await testGpu();
  const outer = new KernelProfiler("sync-replay");
  outer.start(gpu);
  throws(() => outer.start(gpu), /already started/);
  await outer.stop();
  await rejects(() => new KernelProfiler().stop(), /stop without start/);
});
