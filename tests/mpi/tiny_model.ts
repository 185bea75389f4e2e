/**
 * The tiny model and per-rank data of the data-parallel tests (in-process and under mpiexec):
 * an MLP head (Linear -> BatchNorm1d+ReLU -> Linear), batch 5, 6 -> 8 -> 3 features.
 */
import type { Gpu, Tensor } from "../../runtime/gpu.ts";
import { Rng } from "../../runtime/random.ts";
import { Context, zeroGrads } from "../../models/layers.ts";
import { Mlp } from "../../models/heads.ts";

export const TINY = { batch: 5, inFeatures: 6, hidden: 8, outFeatures: 3 };

/** A tiny MLP whose initial weights depend on `seed`. */
export function tinyModel(gpu: Gpu, seed: number): { ctx: Context; mlp: Mlp } {
  const ctx = new Context(gpu);
  const mlp = new Mlp(ctx, "head", {
    inFeatures: TINY.inFeatures,
    hidden: TINY.hidden,
    outFeatures: TINY.outFeatures,
  }, new Rng(seed));
  return { ctx, mlp };
}

/** Rank r's micro-batch: inputs and the gradient arriving at the output. */
export interface MicroBatchData {
  x: Float32Array;
  dy: Float32Array;
}

export function rankData(rank: number): MicroBatchData {
  const rng = new Rng(1000 + rank);
  return {
    x: rng.normals(TINY.batch * TINY.inFeatures),
    dy: rng.normals(TINY.batch * TINY.outFeatures),
  };
}

/**
 * Zero the gradients, then forward and backward each micro-batch with its output gradient scaled
 * by 1 / micro-batches (as the SSL step accumulates), in order.
 */
export function accumulate(gpu: Gpu, ctx: Context, mlp: Mlp, batches: MicroBatchData[]): void {
  zeroGrads(gpu, mlp);
  for (const { x, dy } of batches) {
    const input = gpu.upload(x, [TINY.batch, TINY.inFeatures]);
    mlp.forward(input);
    const scaled = dy.map((v) => v / batches.length);
    const outputGrad = gpu.upload(scaled, [TINY.batch, TINY.outFeatures]);
    mlp.backward(outputGrad);
    ctx.releaseActivations();
    input.release();
    outputGrad.release();
  }
}

/** Host copies of the parameters' values and gradients and the states, in module order. */
export async function snapshot(
  gpu: Gpu,
  mlp: Mlp,
): Promise<{ values: number[][]; grads: number[][]; states: number[][] }> {
  const params = mlp.parameters();
  const tensors: Tensor[] = [
    ...params.map((p) => p.value),
    ...params.map((p) => p.grad),
    ...mlp.states().map((s) => s.value),
  ];
  const all = (await gpu.read(tensors)).map((a) => [...a]);
  const n = params.length;
  return { values: all.slice(0, n), grads: all.slice(n, 2 * n), states: all.slice(2 * n) };
}
