/**
 * The benchmarks' per-call timing (bench/harness.ts perCallMs) against a simulated device whose
 * every wait costs 11 ms on top of 2 ms per call (lavapipe's fence polling): the figure must be
 * the call's time with the wait amortised over a ~500 ms batch, not the 1-call-per-wait time.
 */
import assert from "node:assert/strict";
import { formatRatio, perCallMs } from "../bench/harness.ts";

const WAIT_MS = 11;

function simulated(callMs: number) {
  const batches: number[] = [];
  const timeBatch = (calls: number) => {
    batches.push(calls);
    return Promise.resolve(WAIT_MS + callMs * calls);
  };
  return { batches, timeBatch };
}

Deno.test("perCallMs: batches of ~500 ms amortise the wait (2 ms calls read 2.07 ms, not 13)", async () => {
  const { batches, timeBatch } = simulated(2);
  const ms = await perCallMs(timeBatch, 1000);
  // Probe: 1 call (13 ms), then 10 calls (3.1 ms each): 161 calls per timed batch.
  assert.deepEqual(batches, [1, 10, 161, 161, 161]);
  assert.ok(Math.abs(ms - (2 + WAIT_MS / 161)) < 1e-9, `per call ${ms} ms`);
});

Deno.test("perCallMs: the batch stays within maxCalls", async () => {
  const { batches, timeBatch } = simulated(0.01);
  const ms = await perCallMs(timeBatch, 50);
  assert.deepEqual(batches, [1, 10, 50, 50, 50]);
  assert.ok(Math.abs(ms - (0.01 + WAIT_MS / 50)) < 1e-9, `per call ${ms} ms`);
});

Deno.test("perCallMs: a call slower than 2 s is timed once", async () => {
  const { batches, timeBatch } = simulated(2500);
  assert.equal(await perCallMs(timeBatch, 1000), 2500 + WAIT_MS);
  assert.deepEqual(batches, [1]);
});

Deno.test("formatRatio: ratios under 1 keep two decimals (0.45x must not read 0.5x)", () => {
  assert.deepEqual([0.451, 0.5, 0.316, 5.2, 28.04].map(formatRatio), [
    "0.45x",
    "0.50x",
    "0.32x",
    "5.2x",
    "28.0x",
  ]);
});
