/**
 * Measures GradientSync's host round trip per step (readback + all-reduce + upload) for the
 * online networks of the `small` preset (ResNet-18 widths 8-64, heads 64-512-64) and of
 * `resnet50-imagenet` (heads 2048-4096-256), and the all-reduce alone on host buffers of those
 * sizes. Run: `mpiexec -n 2 node_modules/deno/deno run -A tests/mpi/sync_cost.ts [steps]`;
 * rank 0 prints one JSON line per model. Not a test: numbers for BENCHMARKS.md.
 */
import { acquireGpu } from "../../runtime/gpu.ts";
import { Rng } from "../../runtime/random.ts";
import { openMpi } from "../../runtime/mpi.ts";
import { Context } from "../../models/layers.ts";
import { parameterCount } from "../../models/resnet.ts";
import { Branch, type SslModelConfig } from "../../models/ssl.ts";
import { GradientSync } from "../../models/data_parallel.ts";
import { PRESETS } from "../../tasks/presets.ts";

const steps = Number(Deno.args[0] ?? 10);
const mpi = openMpi();
const gpu = await acquireGpu();

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

for (const [preset, inChannels] of [["small", 1], ["resnet50-imagenet", 3]] as const) {
  const p = PRESETS[preset];
  const config: SslModelConfig = {
    backbone: { arch: p.arch, inChannels, smallImage: p.smallImage, widths: p.widths },
    projectorHidden: p.projectorHidden,
    projectorOut: p.projectorOut,
    predictorHidden: p.predictorHidden,
    loss: p.loss,
  };
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
    const m = (key: keyof typeof rows[0]) => +median(rows.map((r) => r[key])).toFixed(1);
    console.log(JSON.stringify({
      preset,
      ranks: mpi.size,
      parameters: parameterCount(online),
      floatsPerStep: sync.floatsPerStep,
      megabytesPerStep: +(sync.floatsPerStep * 4 / 2 ** 20).toFixed(2),
      medianMs: {
        read: m("read"),
        allReduce: m("reduce"),
        uploadEncode: m("upload"),
        uploadGpu: m("uploadGpu"),
        total: +median(rows.map((r) => r.read + r.reduce + r.upload + r.uploadGpu)).toFixed(1),
        allReduceAlone: +median(alone).toFixed(1),
      },
    }));
  }
}
mpi.finalize();
