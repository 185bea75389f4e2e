/**
 * Measures GradientSync's host round trip per step (readback + all-reduce + upload) for the
 * online networks of the `small` preset (ResNet-18 widths 8-64, heads 64-512-64) and of
 * `resnet50-imagenet` (heads 2048-4096-256), and the all-reduce alone on host buffers of those
 * sizes. Run: `mpiexec -n 2 node_modules/deno/deno run -A tests/mpi/sync_cost.ts [steps]
 * [presets...]`; rank 0 prints one JSON line per model (median and minimum over the steps). Not a
 * test: numbers for BENCHMARKS.md.
 */
import { acquireGpu } from "../../runtime/gpu.ts";
import { Rng } from "../../runtime/random.ts";
import { openMpi } from "../../runtime/mpi.ts";
import { Context } from "../../models/layers.ts";
import { parameterCount } from "../../models/resnet.ts";
import { Branch, sslModelConfig } from "../../models/ssl.ts";
import { GradientSync } from "../../models/data_parallel.ts";
import { PRESETS } from "../../tasks/presets.ts";

const steps = Number(Deno.args[0] ?? 10);
const presets = Deno.args.length > 1 ? Deno.args.slice(1) : ["small", "resnet50-imagenet"];
const mpi = openMpi();
const gpu = await acquireGpu();

/** Median and minimum, rounded to 0.1 ms. */
function stats(values: number[]): [number, number] {
  const sorted = [...values].sort((a, b) => a - b);
  return [sorted[Math.floor(sorted.length / 2)], sorted[0]].map((v) => +v.toFixed(1)) as [
    number,
    number,
  ];
}

for (const preset of presets) {
  const p = PRESETS[preset];
  const inChannels = p.dataset === "fashion-mnist" || p.dataset === "mnist" ? 1 : 3;
  const config = sslModelConfig(p, inChannels);
  const online = new Branch(new Context(gpu), config, true, new Rng(0));
  const sync = new GradientSync(gpu, mpi, online.parameters(), online.states());
  await sync.broadcastInitial();
  const loss = gpu.zeros([2 * p.accum]);
  const rows: { read: number; reduce: number; upload: number; uploadGpu: number }[] = [];
  for (let step = 0; step < steps + 2; step++) {
    // The step's backward would be done here, and the ranks level (time the round trip alone,
    // not one rank waiting for the other on this shared CPU).
    await gpu.sync();
    await mpi.barrier();
    const t = await sync.allReduce([loss]);
    const before = performance.now();
    await gpu.sync();
    const uploadGpu = performance.now() - before;
    if (step >= 2) rows.push({ read: t.readMs, reduce: t.reduceMs, upload: t.uploadMs, uploadGpu });
  }
  // The all-reduce alone on a host buffer of the same size.
  const host = new Float32Array(sync.floatsPerStep + 2 * p.accum).fill(1);
  const alone: number[] = [];
  for (let step = 0; step < steps + 2; step++) {
    await mpi.barrier();
    const before = performance.now();
    await mpi.allReduceSum(host);
    if (step >= 2) alone.push(performance.now() - before);
  }
  if (mpi.rank === 0) {
    const of = (key: keyof typeof rows[0]) => stats(rows.map((r) => r[key]));
    console.log(JSON.stringify({
      preset,
      ranks: mpi.size,
      steps,
      parameters: parameterCount(online),
      floatsPerStep: sync.floatsPerStep,
      megabytesPerStep: +(sync.floatsPerStep * 4 / 2 ** 20).toFixed(2),
      medianAndMinMs: {
        read: of("read"),
        allReduce: of("reduce"),
        uploadEncode: of("upload"),
        uploadGpu: of("uploadGpu"),
        total: stats(rows.map((r) => r.read + r.reduce + r.upload + r.uploadGpu)),
        allReduceAlone: stats(alone),
      },
    }));
  }
}
mpi.finalize();
