/**
 * BatchLoader: shuffled order per epoch, labels and pixels in batch order, determinism and
 * resuming, the one-step-ahead prefetch (read, upload and augment started before the caller asks),
 * evaluation mode, error propagation, and a folder dataset decoded in workers.
 */
import assert from "node:assert/strict";
import { encode as encodePng } from "fast-png";
import { gpuTest, Rng, testGpu } from "./util.ts";
import { type Dataset, shuffledOrder } from "../data/dataset.ts";
import { ArrayDataset } from "../data/memory.ts";
import { type Batch, BatchLoader } from "../data/loader.ts";
import { Augmenter, augmentTensors } from "../data/augment.ts";
import { RELEASED_RESCALE, smallDataViews } from "../data/augment_config.ts";
import { loadImageFolder } from "../data/folder.ts";
import { cropViewSpec } from "../data/folder_decode.ts";

const [H, W, C] = [4, 4, 1];

/** 10 images whose pixels encode their index, labels index % 3. */
function tinyDataset(length = 10): ArrayDataset {
  const pixels = new Uint8Array(length * H * W * C);
  for (let i = 0; i < length; i++) {
    for (let p = 0; p < H * W * C; p++) pixels[i * H * W * C + p] = (i * 16 + p) % 256;
  }
  const labels = Int32Array.from({ length }, (_, i) => i % 3);
  return new ArrayDataset(
    { name: "tiny", classes: 3, height: H, width: W, channels: C, mean: [0.5], std: [0.25] },
    pixels,
    labels,
  );
}

/** A dataset that records every batch() call. */
class RecordingDataset implements Dataset {
  calls: number[][] = [];
  constructor(readonly inner: Dataset) {}
  get name() {
    return this.inner.name;
  }
  get length() {
    return this.inner.length;
  }
  get classes() {
    return this.inner.classes;
  }
  get height() {
    return this.inner.height;
  }
  get width() {
    return this.inner.width;
  }
  get channels() {
    return this.inner.channels;
  }
  get mean() {
    return this.inner.mean;
  }
  get std() {
    return this.inner.std;
  }
  batch(indices: ArrayLike<number>) {
    this.calls.push(Array.from(indices));
    return this.inner.batch(indices);
  }
}

async function summarise(batch: Batch) {
  const images = await batch.images!.read();
  return {
    step: batch.step,
    epoch: batch.epoch,
    indices: Array.from(batch.indices),
    labels: Array.from(batch.labels),
    images,
  };
}

Deno.test({
  name:
    "loader: 7 steps of batch 3 over 10 samples follow shuffledOrder per epoch; pixels and labels match",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const ds = tinyDataset();
    const loader = new BatchLoader(gpu, ds, { batchSize: 3, seed: 42 });
    assert.equal(loader.stepsPerEpoch, 3); // the 10th sample is dropped each epoch
    const seen = [];
    for (let step = 0; step < 7; step++) {
      const batch = await loader.next();
      const s = await summarise(batch);
      const epoch = Math.floor(step / 3);
      const order = shuffledOrder(10, 42, epoch);
      assert.equal(s.step, step);
      assert.equal(s.epoch, epoch);
      assert.deepEqual(s.indices, Array.from(order.subarray((step % 3) * 3, (step % 3) * 3 + 3)));
      assert.deepEqual(s.labels, s.indices.map((i) => i % 3));
      assert.deepEqual(batch.images!.shape, [3, H, W, C]);
      const expected = s.indices.flatMap((i) =>
        Array.from({ length: 16 }, (_, p) => Math.fround(((i * 16 + p) % 256) / 255))
      );
      assert.deepEqual(Array.from(s.images), expected);
      seen.push(s);
      batch.release();
    }
    // Within an epoch no sample repeats.
    const epoch0 = seen.slice(0, 3).flatMap((s) => s.indices);
    assert.equal(new Set(epoch0).size, 9);
    await loader.close();

    // Same seed: same batches; resuming at step 4 replays steps 4..6.
    const again = new BatchLoader(gpu, ds, { batchSize: 3, seed: 42, startStep: 4 });
    for (let step = 4; step < 7; step++) {
      const batch = await again.next();
      const s = await summarise(batch);
      assert.deepEqual(s.indices, seen[step].indices);
      assert.deepEqual(s.images, seen[step].images);
      batch.release();
    }
    await again.close();
    // Another seed: another order.
    const other = new BatchLoader(gpu, ds, { batchSize: 3, seed: 43 });
    const first = await other.next();
    assert.notDeepEqual(Array.from(first.indices), seen[0].indices);
    first.release();
    await other.close();
  },
});

Deno.test({
  name: "loader: the next step's batch is requested, uploaded and augmented before the caller asks",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const ds = new RecordingDataset(tinyDataset());
    const augmenter = new Augmenter(gpu, smallDataViews(4), {
      height: H,
      width: W,
      channels: C,
      mean: [0.5],
      std: [0.25],
    }, 4);
    const perBatch = 1 + 2 * 5; // unpack + 2 views x (rows, cols, colour, blur rows, blur cols)
    const dispatchesAtStart = gpu.dispatchCount;
    const loader = new BatchLoader(gpu, ds, { batchSize: 2, seed: 1, augmenter });
    const b0 = await loader.next();
    await Promise.resolve();
    // Asking for step 0 read steps 0 and 1, and encoded the GPU work (upload + two views) of both.
    assert.deepEqual(ds.calls, [Array.from(loader.indicesOf(0)), Array.from(loader.indicesOf(1))]);
    assert.equal(gpu.dispatchCount - dispatchesAtStart, 2 * perBatch);
    const b1 = await loader.next();
    await Promise.resolve();
    assert.equal(ds.calls.length, 3, "asking for step 1 starts step 2");
    assert.equal(
      gpu.dispatchCount - dispatchesAtStart,
      3 * perBatch,
      "step 1 was ready; step 2 prepared",
    );
    const b2 = await loader.next();
    assert.equal(ds.calls.length, 4);
    // The views are exactly the augmenter's for (seed, step).
    for (const b of [b0, b1, b2]) {
      // Without a rescale in the config the branch inputs are the views themselves.
      assert.deepEqual(b.branches!.online, [b.views!.view1, b.views!.view2]);
      assert.deepEqual(b.branches!.target, [b.views!.view1, b.views!.view2]);
      const direct = augmenter.views(b.images!, 1, b.step);
      const [v1, v2, d1, d2] = await gpu.read([
        b.views!.view1,
        b.views!.view2,
        direct.view1,
        direct.view2,
      ]);
      assert.deepEqual(v1, d1);
      assert.deepEqual(v2, d2);
      direct.view1.release();
      direct.view2.release();
      b.release();
    }
    await loader.close();
  },
});

Deno.test({
  name: "loader: evaluation mode walks the dataset in order, keeping the last partial batch",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const loader = new BatchLoader(gpu, tinyDataset(), {
      batchSize: 4,
      seed: 0,
      shuffle: false,
      dropLast: false,
    });
    assert.equal(loader.stepsPerEpoch, 3);
    const got: number[][] = [];
    for await (const batch of loader) {
      got.push(Array.from(batch.indices));
      assert.deepEqual(batch.images!.shape, [batch.indices.length, H, W, C]);
      batch.release();
      if (batch.step === 2) break;
    }
    assert.deepEqual(got, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]);
    await loader.close();
    await assert.rejects(() => loader.next(), /after close/);
  },
});

Deno.test({
  name: "loader: clear errors for a too-small dataset, a shape mismatch and a failing read",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    assert.throws(
      () => new BatchLoader(gpu, tinyDataset(3), { batchSize: 4, seed: 0 }),
      /fewer than one batch of 4/,
    );
    const augmenter = new Augmenter(gpu, smallDataViews(28), {
      height: 28,
      width: 28,
      channels: 1,
      mean: [0],
      std: [1],
    }, 28);
    assert.throws(
      () => new BatchLoader(gpu, tinyDataset(), { batchSize: 2, seed: 0, augmenter }),
      /expects 28x28x1 images, tiny has 4x4x1/,
    );
    const failing = new RecordingDataset(tinyDataset());
    failing.batch = () => Promise.reject(new Error("disk on fire: /data/x.bin"));
    const loader = new BatchLoader(gpu, failing, { batchSize: 2, seed: 0 });
    await assert.rejects(() => loader.next(), /disk on fire/);
    await loader.close();
  },
});

Deno.test({
  name: "loader: a folder dataset's views are cut in workers, prefetched, finished at 8x8x3",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const root = await Deno.makeTempDir({ prefix: "tritrain-loader-" });
    const rng = new Rng(5);
    const originals = new Map<string, Uint8Array>();
    for (const cls of ["a", "b"]) {
      await Deno.mkdir(`${root}/${cls}`);
      for (let i = 0; i < 12; i++) {
        const rgb = Uint8Array.from({ length: 8 * 8 * 3 }, () => Math.floor(rng.next() * 256));
        await Deno.writeFile(
          `${root}/${cls}/${i}.png`,
          encodePng({ width: 8, height: 8, data: rgb, channels: 3 }),
        );
        originals.set(`${cls}/${i}.png`, rgb);
      }
    }
    const ds = await loadImageFolder(root, "train", 8, { workers: 2 });
    try {
      const augmenter = new Augmenter(gpu, smallDataViews(8), {
        height: 8,
        width: 8,
        channels: 3,
        mean: ds.mean,
        std: ds.std,
      }, 8);
      const loader = new BatchLoader(gpu, ds, { batchSize: 4, seed: 3, augmenter });
      // Step 0's views: the dataset's CPU crops of that step, finished on the GPU.
      const direct = await ds.randomResizedCrops!(loader.indicesOf(0), {
        seed: 3,
        step: 0,
        size: 8,
        views: [cropViewSpec(augmenter.config.views[0]), cropViewSpec(augmenter.config.views[1])],
      });
      const expected = augmenter.viewsFromCrops(direct.views, 4, 3, 0);
      const b0 = await loader.next();
      const b1 = await loader.next();
      assert.equal(b0.images, undefined);
      const [v1, v2, e1, e2] = await gpu.read([
        b0.views!.view1,
        b0.views!.view2,
        expected.view1,
        expected.view2,
      ]);
      assert.deepEqual([v1, v2], [e1, e2]);
      assert.deepEqual(Array.from(b0.labels), Array.from(direct.labels));
      assert.deepEqual(b1.views!.view2.shape, [4, 8, 8, 3]);
      expected.view1.release();
      expected.view2.release();
      // With the released rescale (scaled to 8 px: online 3-8, target 5-8) the branches carry
      // the sampled sizes.
      const rescaling = new Augmenter(
        gpu,
        { ...smallDataViews(8), rescale: RELEASED_RESCALE },
        augmenter.input,
        8,
      );
      const withRescale = new BatchLoader(gpu, ds, { batchSize: 4, seed: 3, augmenter: rescaling });
      const r0 = await withRescale.next();
      const sizes = rescaling.branchSizes(3, 0);
      assert.deepEqual(r0.branches!.sizes, sizes);
      assert.deepEqual(r0.branches!.online.map((t) => t.shape[1]), sizes.online);
      assert.deepEqual(r0.branches!.target.map((t) => t.shape[1]), sizes.target);
      r0.release();
      await withRescale.close();
      b0.release();
      b1.release();
      await loader.close();
    } finally {
      ds.close?.();
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "loader: CPU-cut views allocate what augmentTensors plans; batch 196 at 224 px fits 128 MiB",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const [n, size, channels] = [3, 16, 3];
    const augmenter = new Augmenter(gpu, smallDataViews(size), {
      height: size,
      width: size,
      channels,
      mean: [0.5, 0.5, 0.5],
      std: [0.25, 0.25, 0.25],
    }, size);
    const rng = new Rng(2);
    const crop = () =>
      Uint8Array.from({ length: n * size * size * channels }, () => rng.next() * 256);
    // Record every tensor the two views allocate.
    const allocated: number[] = [];
    const empty = gpu.empty.bind(gpu);
    gpu.empty = (shape, dtype, label) => {
      allocated.push(shape.reduce((a, b) => a * b, 1) * 4);
      return empty(shape, dtype, label);
    };
    let views;
    try {
      views = augmenter.viewsFromCrops([crop(), crop()], n, 1, 0);
    } finally {
      gpu.empty = empty;
    }
    const perView = augmentTensors(n, size, channels, "crops").map((t) => t.bytes);
    assert.deepEqual(
      allocated.sort((a, b) => a - b),
      [...perView, ...perView].sort((a, b) => a - b),
    );
    views.view1.release();
    views.view2.release();
    // The ImageNet preset's micro-batch: 196 crops of 224 px, one view at a time; lavapipe binds
    // at most 128 MiB per storage buffer.
    const limit = 128 * 2 ** 20;
    const plan = augmentTensors(196, 224, 3, "crops");
    assert.ok(plan[0].bytes <= limit, `largest: ${plan[0].label} ${plan[0].bytes} bytes`);
    assert.equal(plan[0].bytes, 196 * 224 * 224 * 3 * 4);
    // Cropping on the GPU from images stored at 256 px would not fit (why the crops are cut on
    // the CPU): the f32 batch and the row pass exceed one binding.
    const onGpu = augmentTensors(196, 224, 3, { height: 256, width: 256 });
    assert.ok(onGpu[0].bytes > limit && onGpu[1].bytes > limit, JSON.stringify(onGpu.slice(0, 2)));
  },
});
