/**
 * Augmentation kernels against float64 CPU references with fixed parameters, a golden check of
 * the resampling against PyTorch, the Philox streams (known answers, reproducibility, configured
 * probabilities) and the Augmenter end to end.
 */
import assert from "node:assert/strict";
import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import type { Gpu, Tensor } from "../runtime/gpu.ts";
import {
  AUGMENT_PARAM_STRIDE,
  blurSolarizeNormalize,
  colourJitterGrayscale,
  cropResizeFlip,
  type ResampleFilter,
  rescaleBilinear,
  unpackBytes,
} from "../kernels/augment.ts";
import {
  DRAWS,
  packAugmentations,
  roundHalfEven,
  type SampleAugmentation,
  sampleAugmentation,
  sampleBranchSizes,
  sampleCrop,
  sampleCropAndFlip,
  sampleStream,
  scaledRange,
} from "../data/augment_params.ts";
import { imagenetViews, RELEASED_RESCALE, smallDataViews } from "../data/augment_config.ts";
import { Augmenter, releaseBranches, uploadPixels } from "../data/augment.ts";
import { CounterStream, philox4x32 } from "../data/random.ts";

// f32 kernels vs float64 references: resampling and blur sum a few dozen products of values in
// [0, 1] with normalised weights; hue goes through divisions. 2e-5 covers f32 rounding there.
const TOL = { atol: 2e-5, rtol: 1e-5 };

// ---------------------------------------------------------------------------------------------
// float64 references (torchvision / Pillow definitions)

interface Image64 {
  h: number;
  w: number;
  c: number;
  data: Float64Array;
}

function filterWeight(x: number, filter: ResampleFilter): number {
  const a = Math.abs(x);
  if (filter === "bilinear") return Math.max(0, 1 - a);
  const A = -0.5;
  if (a < 1) return ((A + 2) * a - (A + 3)) * a * a + 1;
  if (a < 2) return (((a - 5) * a + 8) * a - 4) * A;
  return 0;
}

/** Pillow-style resample of `inSize` samples (via get) to `outSize` (normalised taps). */
function resample1d(
  get: (k: number) => number,
  inSize: number,
  outSize: number,
  o: number,
  filter: ResampleFilter,
): number {
  const scale = inSize / outSize;
  const stretch = Math.max(scale, 1);
  const support = (filter === "bilinear" ? 1 : 2) * stretch;
  const center = (o + 0.5) * scale;
  const first = Math.max(Math.floor(center - support + 0.5), 0);
  const end = Math.min(Math.floor(center + support + 0.5), inSize);
  let acc = 0, sum = 0;
  for (let k = first; k < end; k++) {
    const w = filterWeight((k - center + 0.5) / stretch, filter);
    acc += w * get(k);
    sum += w;
  }
  return sum !== 0 ? acc / sum : acc;
}

const clamp01 = (v: number) => Math.min(1, Math.max(0, v));

function refCropResize(
  img: Image64,
  box: { top: number; left: number; height: number; width: number },
  outH: number,
  outW: number,
  flip: boolean,
  filter: ResampleFilter,
  clamp = true,
): Image64 {
  const { c } = img;
  const cl = clamp ? clamp01 : (v: number) => v;
  const wide = new Float64Array(box.height * outW * c);
  for (let y = 0; y < box.height; y++) {
    for (let x = 0; x < outW; x++) {
      const xs = flip ? outW - 1 - x : x;
      for (let ch = 0; ch < c; ch++) {
        const get = (k: number) => img.data[((box.top + y) * img.w + box.left + k) * c + ch];
        wide[(y * outW + x) * c + ch] = cl(resample1d(get, box.width, outW, xs, filter));
      }
    }
  }
  const out = new Float64Array(outH * outW * c);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      for (let ch = 0; ch < c; ch++) {
        const get = (k: number) => wide[(k * outW + x) * c + ch];
        out[(y * outW + x) * c + ch] = cl(resample1d(get, box.height, outH, y, filter));
      }
    }
  }
  return { h: outH, w: outW, c, data: out };
}

const luma = (r: number, g: number, b: number) => 0.2989 * r + 0.587 * g + 0.114 * b;

function greyMean(img: Image64): number {
  let s = 0;
  const pixels = img.h * img.w;
  for (let p = 0; p < pixels; p++) {
    const d = img.data;
    s += img.c === 3 ? luma(d[3 * p], d[3 * p + 1], d[3 * p + 2]) : d[p];
  }
  return s / pixels;
}

function mapPixels(img: Image64, f: (v: number[]) => number[]): Image64 {
  const out = new Float64Array(img.data.length);
  for (let p = 0; p < img.h * img.w; p++) {
    const v = f(Array.from(img.data.subarray(p * img.c, (p + 1) * img.c)));
    out.set(v, p * img.c);
  }
  return { ...img, data: out };
}

/** torchvision _rgb2hsv / _hsv2rgb with the hue shift (float tensors). */
function refHue(rgb: number[], shift: number): number[] {
  const [r, g, b] = rgb;
  const maxc = Math.max(r, g, b), minc = Math.min(r, g, b);
  const eqc = maxc === minc;
  const cr = maxc - minc;
  const s = cr / (eqc ? 1 : maxc);
  const div = eqc ? 1 : cr;
  const rc = (maxc - r) / div, gc = (maxc - g) / div, bc = (maxc - b) / div;
  let h = maxc === r ? bc - gc : maxc === g ? 2 + rc - bc : 4 + gc - rc;
  h = ((h / 6 + 1) % 1 + 1) % 1;
  h = h + shift;
  h = h - Math.floor(h);
  const v = maxc;
  const iF = Math.floor(h * 6);
  const f = h * 6 - iF;
  const i = ((iF % 6) + 6) % 6;
  const p = clamp01(v * (1 - s)), q = clamp01(v * (1 - s * f)), t = clamp01(v * (1 - s * (1 - f)));
  return [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i];
}

function refColour(img: Image64, a: SampleAugmentation): Image64 {
  let out = img;
  const colour = img.c === 3;
  if (a.jitter) {
    const j = a.jitter;
    for (const op of j.order) {
      if (op === 0) out = mapPixels(out, (v) => v.map((x) => clamp01(x * j.brightness)));
      if (op === 1) {
        const m = greyMean(out);
        out = mapPixels(out, (v) => v.map((x) => clamp01(j.contrast * x + (1 - j.contrast) * m)));
      }
      if (op === 2 && colour) {
        out = mapPixels(out, (v) => {
          const grey = luma(v[0], v[1], v[2]);
          return v.map((x) => clamp01(j.saturation * x + (1 - j.saturation) * grey));
        });
      }
      if (op === 3 && colour && j.hue !== 0) out = mapPixels(out, (v) => refHue(v, j.hue));
    }
  }
  if (a.grayscale && colour) out = mapPixels(out, (v) => Array(3).fill(luma(v[0], v[1], v[2])));
  return out;
}

function refBlur(img: Image64, sigma: number, kernelSize?: number): Image64 {
  if (sigma <= 0) return img;
  const radius = kernelSize !== undefined ? (kernelSize - 1) / 2 : Math.ceil(3 * sigma);
  const weights: number[] = [];
  let sum = 0;
  for (let k = -radius; k <= radius; k++) {
    const w = Math.exp(-(k * k) / (2 * sigma * sigma));
    weights.push(w);
    sum += w;
  }
  const { h, w, c } = img;
  const pass = (src: Float64Array, horizontal: boolean) => {
    const out = new Float64Array(src.length);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        for (let ch = 0; ch < c; ch++) {
          let acc = 0;
          for (let k = -radius; k <= radius; k++) {
            const xs = horizontal ? Math.min(w - 1, Math.max(0, x + k)) : x;
            const ys = horizontal ? y : Math.min(h - 1, Math.max(0, y + k));
            acc += weights[k + radius] * src[(ys * w + xs) * c + ch];
          }
          out[(y * w + x) * c + ch] = acc / sum;
        }
      }
    }
    return out;
  };
  return { ...img, data: pass(pass(img.data, true), false) };
}

function refFinish(
  img: Image64,
  a: SampleAugmentation,
  mean: number[],
  std: number[],
  threshold: number,
  kernelSize?: number,
): Image64 {
  const blurred = refBlur(img, a.blurSigma, kernelSize);
  return mapPixels(blurred, (v) =>
    v.map((x, ch) => {
      const y = a.solarize && x >= threshold ? 1 - x : x;
      return (y - mean[ch]) / std[ch];
    }));
}

function refRescale(img: Image64, outH: number, outW: number): Image64 {
  const src = (o: number, inSize: number, outSize: number) => {
    const s = Math.max((inSize / outSize) * (o + 0.5) - 0.5, 0);
    const i0 = Math.min(Math.floor(s), inSize - 1);
    return [i0, Math.min(i0 + 1, inSize - 1), s - i0];
  };
  const out = new Float64Array(outH * outW * img.c);
  for (let y = 0; y < outH; y++) {
    const [y0, y1, ly] = src(y, img.h, outH);
    for (let x = 0; x < outW; x++) {
      const [x0, x1, lx] = src(x, img.w, outW);
      for (let ch = 0; ch < img.c; ch++) {
        const at = (yy: number, xx: number) => img.data[(yy * img.w + xx) * img.c + ch];
        const top = (1 - lx) * at(y0, x0) + lx * at(y0, x1);
        const bottom = (1 - lx) * at(y1, x0) + lx * at(y1, x1);
        out[(y * outW + x) * img.c + ch] = (1 - ly) * top + ly * bottom;
      }
    }
  }
  return { h: outH, w: outW, c: img.c, data: out };
}

// ---------------------------------------------------------------------------------------------
// helpers

function imageOf(batch: ArrayLike<number>, n: number, h: number, w: number, c: number): Image64 {
  const size = h * w * c;
  return {
    h,
    w,
    c,
    data: Float64Array.from(Array.prototype.slice.call(batch, n * size, (n + 1) * size)),
  };
}

function concat(images: Image64[]): Float64Array {
  const out = new Float64Array(images.reduce((s, i) => s + i.data.length, 0));
  let o = 0;
  for (const i of images) {
    out.set(i.data, o);
    o += i.data.length;
  }
  return out;
}

function plain(
  overrides: Partial<SampleAugmentation> & { crop: SampleAugmentation["crop"] },
): SampleAugmentation {
  return {
    flip: false,
    jitter: null,
    grayscale: false,
    blurSigma: 0,
    solarize: false,
    ...overrides,
  };
}

function uploadParams(gpu: Gpu, samples: SampleAugmentation[], h: number, w: number): Tensor {
  return gpu.upload(packAugmentations(samples, { height: h, width: w }), [
    samples.length,
    AUGMENT_PARAM_STRIDE,
  ]);
}

// ---------------------------------------------------------------------------------------------
// kernels vs references

Deno.test({
  name: "augment: unpack uint8 -> f32/255, 4099 bytes (not a multiple of 4), exact",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rng = new Rng(1);
    const count = 4099;
    const bytes = Uint8Array.from({ length: count }, () => Math.floor(rng.next() * 256));
    const words = new Uint32Array(Math.ceil(count / 4));
    new Uint8Array(words.buffer).set(bytes);
    const packed = gpu.upload(words, [words.length], "u32");
    const out = gpu.empty([count]);
    unpackBytes(gpu, packed, count, out);
    const got = await out.read();
    assertClose(
      got,
      Float64Array.from(bytes, (b) => Math.fround(b / 255)),
      { atol: 0, rtol: 0 },
      "unpack",
    );
    packed.release();
    out.release();
  },
});

for (const filter of ["bilinear", "bicubic"] as const) {
  Deno.test({
    name: `augment: crop + resize (${filter}) + flip, [4, 13, 17, 3] -> [4, 9, 9, 3], tol 2e-5`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const [N, H, W, C, S] = [4, 13, 17, 3, 9];
      const rng = new Rng(filter === "bilinear" ? 2 : 3);
      const input = rng.array(N * H * W * C, 0, 1);
      const samples = [
        plain({ crop: { top: 0, left: 0, height: 13, width: 17 } }), // shrink both ways
        plain({ crop: { top: 3, left: 5, height: 4, width: 6 }, flip: true }), // enlarge
        plain({ crop: { top: 1, left: 2, height: 12, width: 5 }, flip: true }), // mixed
        plain({ crop: { top: 12, left: 16, height: 1, width: 1 } }), // single pixel
      ];
      const images = gpu.upload(input, [N, H, W, C]);
      const params = uploadParams(gpu, samples, H, W);
      const out = gpu.empty([N, S, S, C]);
      cropResizeFlip(gpu, images, params, out, filter);
      const got = await out.read();
      const expected = concat(
        samples.map((a, n) =>
          refCropResize(imageOf(input, n, H, W, C), a.crop, S, S, a.flip, filter)
        ),
      );
      assertClose(got, expected, TOL, `crop+resize ${filter}`);
      for (const t of [images, params, out]) t.release();
    },
  });
}

Deno.test({
  name: "augment: crop + resize matches torch F.interpolate(antialias=True) golden, tol 1e-5",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const golden = JSON.parse(
      await Deno.readTextFile(new URL("./golden/augment_resample.json", import.meta.url)),
    );
    const [, H, W, C] = golden.shape as number[];
    const images = gpu.upload(golden.input, [1, H, W, C]);
    for (const g of golden.crops) {
      const crop = { top: g.top, left: g.left, height: g.height, width: g.width };
      const params = uploadParams(gpu, [plain({ crop })], H, W);
      const out = gpu.empty([1, g.size, g.size, C]);
      cropResizeFlip(gpu, images, params, out, g.filter);
      assertClose(
        await out.read(),
        g.output,
        { atol: 1e-5, rtol: 1e-5 },
        `${g.filter} ${JSON.stringify(crop)}`,
      );
      params.release();
      out.release();
    }
    for (const g of golden.rescales) {
      const out = gpu.empty([1, g.height, g.width, C]);
      rescaleBilinear(gpu, images, out);
      assertClose(
        await out.read(),
        g.output,
        { atol: 1e-5, rtol: 1e-5 },
        `rescale ${g.height}x${g.width}`,
      );
      out.release();
    }
    images.release();
  },
});

/** Run the colour kernel on random images with the given records and compare. */
async function checkColour(
  samples: SampleAugmentation[],
  channels: number,
  label: string,
  seed: number,
) {
  const gpu = await testGpu();
  const [H, W] = [11, 23]; // 253 pixels: threads 253..255 of the workgroup get none
  const n = samples.length;
  const input = new Rng(seed).array(n * H * W * channels, 0, 1);
  const images = gpu.upload(input, [n, H, W, channels]);
  const params = uploadParams(
    gpu,
    samples.map((s) => ({ ...s, crop: { top: 0, left: 0, height: H, width: W } })),
    H,
    W,
  );
  colourJitterGrayscale(gpu, images, params);
  const got = await images.read();
  const expected = concat(samples.map((a, i) => refColour(imageOf(input, i, H, W, channels), a)));
  assertClose(got, expected, TOL, label);
  images.release();
  params.release();
}

const box = { top: 0, left: 0, height: 1, width: 1 };
const identityJitter = {
  brightness: 1,
  contrast: 1,
  saturation: 1,
  hue: 0,
  order: [0, 1, 2, 3] as [number, number, number, number],
};

Deno.test({
  name:
    "augment: colour jitter, each op alone (brightness, contrast, saturation, hue), [2, 11, 23, 3]",
  ...gpuTest,
  fn: async () => {
    const ops: [string, Partial<typeof identityJitter>[]][] = [
      ["brightness", [{ brightness: 0.63 }, { brightness: 1.37 }]],
      ["contrast", [{ contrast: 0.61 }, { contrast: 1.4 }]],
      ["saturation", [{ saturation: 0.8 }, { saturation: 1.19 }]],
      ["hue", [{ hue: -0.1 }, { hue: 0.0731 }]],
    ];
    let seed = 10;
    for (const [name, settings] of ops) {
      const samples = settings.map((s) =>
        plain({ crop: box, jitter: { ...identityJitter, ...s } })
      );
      await checkColour(samples, 3, `jitter ${name}`, seed++);
    }
  },
});

Deno.test({
  name: "augment: colour jitter in random orders + grayscale, [6, 11, 23, 3] and 1 channel",
  ...gpuTest,
  fn: async () => {
    const orders: [number, number, number, number][] = [
      [0, 1, 2, 3],
      [3, 2, 1, 0],
      [2, 0, 3, 1],
      [1, 3, 0, 2],
    ];
    const jitter = (k: number) => ({
      brightness: 0.7 + 0.2 * k,
      contrast: 1.3 - 0.2 * k,
      saturation: 0.85 + 0.1 * k,
      hue: -0.08 + 0.05 * k,
      order: orders[k],
    });
    const samples = [
      ...orders.map((_, k) => plain({ crop: box, jitter: jitter(k), grayscale: k === 2 })),
      plain({ crop: box, grayscale: true }),
      plain({ crop: box }), // untouched
    ];
    await checkColour(samples, 3, "jitter orders + grayscale (RGB)", 20);
    // One channel: brightness and contrast apply; saturation, hue and grayscale are no-ops.
    await checkColour(samples, 1, "jitter orders (grey)", 21);
  },
});

Deno.test({
  name:
    "augment: blur (sigma 0 / 0.5 / 1.3 / 2.0, radius ceil(3 sigma); fixed 5) + solarize + normalise",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const [H, W, C] = [14, 9, 3];
    const samples = [
      plain({ crop: box }),
      plain({ crop: box, blurSigma: 0.5 }),
      plain({ crop: box, blurSigma: 1.3, solarize: true }),
      plain({ crop: box, blurSigma: 2.0 }),
      plain({ crop: box, solarize: true }),
    ];
    const n = samples.length;
    const input = new Rng(30).array(n * H * W * C, 0, 1);
    const mean = [0.485, 0.456, 0.406];
    const std = [0.229, 0.224, 0.225];
    const images = gpu.upload(input, [n, H, W, C]);
    const params = uploadParams(gpu, samples, H, W);
    for (const kernelSize of [undefined, 5]) {
      const out = gpu.empty([n, H, W, C]);
      blurSolarizeNormalize(gpu, images, params, out, {
        mean,
        std,
        solarizeThreshold: 0.5,
        blurKernelSize: kernelSize,
      });
      const expected = concat(
        samples.map((a, i) => refFinish(imageOf(input, i, H, W, C), a, mean, std, 0.5, kernelSize)),
      );
      // Normalising divides by std ~0.22, so the absolute error grows by ~4.5x.
      assertClose(
        await out.read(),
        expected,
        { atol: 1e-4, rtol: 1e-5 },
        `blur/solarize/normalise k=${kernelSize}`,
      );
      out.release();
    }
    images.release();
    params.release();
  },
});

Deno.test({
  name: "augment: batch rescale bilinear (align_corners=False), [2, 10, 7, 3] -> 4x5 and 23x16",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const [N, H, W, C] = [2, 10, 7, 3];
    const input = new Rng(40).array(N * H * W * C, -2, 2);
    const images = gpu.upload(input, [N, H, W, C]);
    for (const [oh, ow] of [[4, 5], [23, 16]]) {
      const out = gpu.empty([N, oh, ow, C]);
      rescaleBilinear(gpu, images, out);
      const expected = concat([0, 1].map((n) => refRescale(imageOf(input, n, H, W, C), oh, ow)));
      assertClose(await out.read(), expected, TOL, `rescale ${oh}x${ow}`);
      out.release();
    }
    images.release();
  },
});

Deno.test({
  name: "augment: wrappers reject mismatched shapes with a clear error",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const images = gpu.empty([2, 8, 8, 3]);
    const params = gpu.empty([2, AUGMENT_PARAM_STRIDE]);
    assert.throws(
      () => cropResizeFlip(gpu, images, params, gpu.empty([3, 4, 4, 3]), "bilinear"),
      /disagree/,
    );
    assert.throws(
      () => cropResizeFlip(gpu, images, gpu.empty([1, 16]), gpu.empty([2, 4, 4, 3]), "bilinear"),
      /params need 2 records/,
    );
    assert.throws(
      () => colourJitterGrayscale(gpu, gpu.empty([8, 8, 3]), params),
      /expected \[N, H, W, C\]/,
    );
    assert.throws(
      () =>
        blurSolarizeNormalize(gpu, images, params, gpu.empty([2, 8, 8, 3]), {
          mean: [0],
          std: [1],
          solarizeThreshold: 0.5,
        }),
      /mean\/std need 3 values/,
    );
    assert.throws(
      () =>
        packAugmentations([plain({ crop: { top: 5, left: 0, height: 4, width: 4 } })], {
          height: 8,
          width: 8,
        }),
      /not inside 8x8/,
    );
  },
});

// ---------------------------------------------------------------------------------------------
// random parameter streams

Deno.test("augment params: Philox4x32-10 matches Random123's known-answer vectors", () => {
  const hex = (a: Uint32Array) => Array.from(a, (x) => x.toString(16).padStart(8, "0")).join(" ");
  assert.equal(hex(philox4x32([0, 0, 0, 0], [0, 0])), "6627e8d5 e169c58d bc57ac4c 9b00dbd8");
  const ones = 0xffffffff;
  assert.equal(
    hex(philox4x32([ones, ones, ones, ones], [ones, ones])),
    "408f276d 41c83b0e a20bc7c6 6d5451fd",
  );
  assert.equal(
    hex(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])),
    "d16cfe09 94fdcceb 5001e420 24126ea1",
  );
});

Deno.test("augment params: same (seed, step, sample, view) -> same parameters; any change -> new", () => {
  const view = imagenetViews().views[1];
  const input = { height: 64, width: 48, channels: 3 };
  const a = sampleAugmentation(view, input, 7, 123, 5, 1);
  assert.deepEqual(sampleAugmentation(view, input, 7, 123, 5, 1), a);
  for (
    const [seed, step, sample, v] of [[8, 123, 5, 1], [7, 124, 5, 1], [7, 123, 6, 1], [
      7,
      123,
      5,
      0,
    ]]
  ) {
    assert.notDeepEqual(
      sampleAugmentation(view, input, seed, step, sample, v),
      a,
      `${seed}/${step}/${sample}/${v}`,
    );
  }
  // Steps beyond 2^32 use the high counter word and stay distinct.
  assert.notDeepEqual(sampleAugmentation(view, input, 7, 2 ** 32 + 123, 5, 1), a);
});

Deno.test("augment params: frequencies match the configured probabilities (10,000 draws, 4 sigma)", () => {
  const trials = 10_000;
  const config = imagenetViews();
  const input = { height: 40, width: 60, channels: 3 };
  const within = (name: string, count: number, p: number) => {
    const freq = count / trials;
    const sigma = Math.sqrt(p * (1 - p) / trials);
    if (p === 0 || p === 1) assert.equal(freq, p, `${name}: p=${p} must be exact`);
    else {assert.ok(
        Math.abs(freq - p) < 4 * sigma,
        `${name}: frequency ${freq} vs p=${p} (4 sigma = ${4 * sigma})`,
      );}
  };
  for (const v of [0, 1] as const) {
    const view = config.views[v];
    let flips = 0, jitters = 0, greys = 0, blurs = 0, solarized = 0;
    const orderCounts = new Map<string, number>();
    const firstOp = [0, 0, 0, 0];
    for (let n = 0; n < trials; n++) {
      const a = sampleAugmentation(view, input, 99, Math.floor(n / 100), n % 100, v);
      flips += a.flip ? 1 : 0;
      greys += a.grayscale ? 1 : 0;
      solarized += a.solarize ? 1 : 0;
      if (a.blurSigma > 0) {
        blurs++;
        assert.ok(a.blurSigma >= 0.1 && a.blurSigma < 2.0, `sigma ${a.blurSigma}`);
      }
      if (a.jitter) {
        jitters++;
        const j = a.jitter;
        assert.ok(
          j.brightness >= 0.6 && j.brightness < 1.4 && j.contrast >= 0.6 && j.contrast < 1.4,
        );
        assert.ok(j.saturation >= 0.8 && j.saturation < 1.2 && Math.abs(j.hue) <= 0.1);
        const key = j.order.join("");
        orderCounts.set(key, (orderCounts.get(key) ?? 0) + 1);
        firstOp[j.order[0]]++;
      }
      const { top, left, height, width } = a.crop;
      assert.ok(top >= 0 && left >= 0 && top + height <= 40 && left + width <= 60);
    }
    within(`view ${v + 1} flip`, flips, view.flipP);
    within(`view ${v + 1} jitter`, jitters, view.jitter.p);
    within(`view ${v + 1} grayscale`, greys, view.grayscaleP);
    within(`view ${v + 1} blur`, blurs, view.blur.p);
    within(`view ${v + 1} solarize`, solarized, view.solarize.p);
    // Jitter orders: all 24 permutations equally likely (each cell within 4 sigma).
    assert.equal(orderCounts.size, 24);
    for (const [key, count] of orderCounts) {
      const p = 1 / 24;
      const sigma = Math.sqrt(p * (1 - p) / jitters);
      assert.ok(Math.abs(count / jitters - p) < 4 * sigma, `order ${key}: ${count / jitters}`);
    }
    for (let op = 0; op < 4; op++) {
      const sigma = Math.sqrt(0.25 * 0.75 / jitters);
      assert.ok(Math.abs(firstOp[op] / jitters - 0.25) < 4 * sigma, `op ${op} first`);
    }
  }
});

Deno.test("augment params: random resized crop follows torchvision (ranges, 10 tries, fallback)", () => {
  const scale: [number, number] = [0.08, 1];
  const ratio: [number, number] = [3 / 4, 4 / 3];
  const trials = 10_000;
  let areaSum = 0;
  for (let n = 0; n < trials; n++) {
    const s = sampleStream(5, 0, n, 0);
    const c = sampleCrop(s, 224, 224, scale, ratio);
    const area = (c.height * c.width) / (224 * 224);
    areaSum += area;
    // Rounding of w and h moves area and ratio a little past the sampled ranges.
    assert.ok(area > 0.07 && area <= 1, `area ${area}`);
    assert.ok(c.width / c.height > 0.7 && c.width / c.height < 1.45, `ratio ${c.width / c.height}`);
  }
  // Accepted area fractions: uniform in [0.08, 1] minus rejected large ones; mean well inside.
  const meanArea = areaSum / trials;
  assert.ok(meanArea > 0.4 && meanArea < 0.54, `mean area ${meanArea}`);
  // Replay the first try by hand for one sample: it must be what sampleCrop returned.
  const s = sampleStream(5, 0, 3, 0);
  const targetArea = 224 * 224 * s.uniformIn(DRAWS.cropTries, 0.08, 1);
  const aspect = Math.exp(s.uniformIn(DRAWS.cropTries + 1, Math.log(3 / 4), Math.log(4 / 3)));
  const w = roundHalfEven(Math.sqrt(targetArea * aspect));
  const h = roundHalfEven(Math.sqrt(targetArea / aspect));
  const crop = sampleCrop(sampleStream(5, 0, 3, 0), 224, 224, scale, ratio);
  if (w <= 224 && h <= 224) {
    assert.deepEqual(crop, {
      top: s.integer(DRAWS.cropTries + 2, 224 - h + 1),
      left: s.integer(DRAWS.cropTries + 3, 224 - w + 1),
      height: h,
      width: w,
    });
  }
  // Fallback: a 2x100 strip can never fit a 3/4..4/3 box of >= 8% area: central crop with the
  // widest ratio, as torchvision does.
  const strip = sampleCrop(new CounterStream(1, 0), 2, 100, scale, ratio);
  assert.deepEqual(strip, { top: 0, left: 48, height: 2, width: 3 });
  const tall = sampleCrop(new CounterStream(1, 0), 100, 2, scale, ratio);
  assert.deepEqual(tall, { top: 48, left: 0, height: 3, width: 2 });
  assert.equal(roundHalfEven(2.5), 2);
  assert.equal(roundHalfEven(3.5), 4);
});

Deno.test("augment params: branch rescale sizes are the released ranges scaled to the resolution", () => {
  const counts = new Map<number, number>();
  for (let step = 0; step < 2000; step++) {
    const s = sampleBranchSizes(RELEASED_RESCALE, 224, 3, step);
    for (const size of s.online) {
      assert.ok(size >= 96 && size <= 224);
      counts.set(size, (counts.get(size) ?? 0) + 1);
    }
    for (const size of s.target) assert.ok(size >= 128 && size <= 224);
  }
  assert.ok(counts.has(96) && counts.has(224), "both ends of the inclusive range occur");
  assert.deepEqual(scaledRange(RELEASED_RESCALE.online, RELEASED_RESCALE, 28), [12, 28]);
  assert.deepEqual(scaledRange(RELEASED_RESCALE.target, RELEASED_RESCALE, 28), [16, 28]);
  assert.deepEqual(
    sampleBranchSizes(RELEASED_RESCALE, 28, 3, 17),
    sampleBranchSizes(RELEASED_RESCALE, 28, 3, 17),
  );
});

// ---------------------------------------------------------------------------------------------
// the whole pipeline

for (
  const [label, channels, inputSize, outputSize] of [["28x28x1", 1, 28, 24], [
    "20x26x3",
    3,
    20,
    16,
  ]] as const
) {
  Deno.test({
    name: `augment: Augmenter views = composition of the references, ${label}, deterministic`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const [H, W] = channels === 1 ? [28, 28] : [inputSize, 26];
      const n = 5;
      const mean = channels === 1 ? [0.286] : [0.49, 0.48, 0.45];
      const std = channels === 1 ? [0.353] : [0.25, 0.24, 0.26];
      const config = channels === 1 ? smallDataViews(28) : imagenetViews();
      const augmenter = new Augmenter(
        gpu,
        config,
        { height: H, width: W, channels, mean, std },
        outputSize,
      );
      const rng = new Rng(50 + channels);
      const pixels = Uint8Array.from(
        { length: n * H * W * channels },
        () => Math.floor(rng.next() * 256),
      );
      const images = augmenter.uploadBatch(pixels, n);
      const seed = 11, step = 4;
      const a = augmenter.views(images, seed, step);
      const b = augmenter.views(images, seed, step);
      const c = augmenter.views(images, seed, step + 1);
      const [a1, a2, b1, b2, c1] = await gpu.read([a.view1, a.view2, b.view1, b.view2, c.view1]);
      assert.deepEqual(a1, b1, "same seed and step: same bits (view 1)");
      assert.deepEqual(a2, b2, "same seed and step: same bits (view 2)");
      assert.notDeepEqual(a1, c1, "next step: new views");
      assert.deepEqual(a.view1.shape, [n, outputSize, outputSize, channels]);
      for (const [v, got] of [[0, a1], [1, a2]] as const) {
        const samples = augmenter.sampleParams(n, seed, step, v);
        const view = config.views[v];
        const expected = concat(samples.map((s, i) => {
          const img = imageOf(
            Float64Array.from(pixels, (p) => Math.fround(p / 255)),
            i,
            H,
            W,
            channels,
          );
          const cropped = refCropResize(
            img,
            s.crop,
            outputSize,
            outputSize,
            s.flip,
            view.crop.interpolation,
          );
          return refFinish(
            refColour(cropped, s),
            s,
            mean,
            std,
            view.solarize.threshold,
            view.blur.kernelSize,
          );
        }));
        // A value that lands within f32 rounding of the solarize threshold may flip to 1 - x in
        // one of the two; allow that for at most a handful of elements.
        let flipped = 0;
        const tol = { atol: 2e-4, rtol: 1e-4 };
        const kept = Array.from(got, (g, i) => {
          const bad = Math.abs(g - expected[i]) > tol.atol + tol.rtol * Math.abs(expected[i]);
          if (bad) flipped++;
          return bad ? expected[i] : g;
        });
        assert.ok(flipped <= 2, `view ${v + 1}: ${flipped} elements differ`);
        assertClose(kept, expected, tol, `view ${v + 1}`);
      }
      for (const t of [images, a.view1, a.view2, b.view1, b.view2, c.view1, c.view2]) t.release();
    },
  });
}

Deno.test({
  name: "augment: per-branch rescale gives the sampled sizes; release frees each tensor once",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const config = { ...smallDataViews(28), rescale: RELEASED_RESCALE };
    const augmenter = new Augmenter(gpu, config, {
      height: 28,
      width: 28,
      channels: 1,
      mean: [0.5],
      std: [0.5],
    }, 28);
    const images = augmenter.uploadBatch(new Uint8Array(3 * 28 * 28).fill(77), 3);
    const views = augmenter.views(images, 1, 9);
    const branches = augmenter.rescaleBranches(views, 1, 9);
    const sizes = augmenter.branchSizes(1, 9);
    assert.deepEqual(branches.sizes, sizes);
    branches.online.forEach((t, i) =>
      assert.deepEqual(t.shape, [3, sizes.online[i], sizes.online[i], 1])
    );
    branches.target.forEach((t, i) =>
      assert.deepEqual(t.shape, [3, sizes.target[i], sizes.target[i], 1])
    );
    // A constant image stays constant through every op but contrast/brightness/solarize; the
    // rescaled copies of a view hold only values that view holds.
    const [v1, o1] = await gpu.read([views.view1, branches.online[0]]);
    const values = new Set(Array.from(v1, (x) => x.toFixed(4)));
    if (values.size === 1) assert.ok(Array.from(o1).every((x) => values.has(x.toFixed(4))));
    releaseBranches(views, branches);
    images.release();
    assert.throws(
      () =>
        new Augmenter(gpu, smallDataViews(28), {
          height: 28,
          width: 28,
          channels: 1,
          mean: [0.5],
          std: [0.5],
        }, 28).branchSizes(0, 0),
      /no rescale/,
    );
  },
});

Deno.test("augment params: sampleCropAndFlip makes sampleAugmentation's crop and flip draws", () => {
  const rng = new Rng(4);
  for (const view of [...imagenetViews().views, ...smallDataViews(32).views]) {
    for (let t = 0; t < 50; t++) {
      const [height, width] = [1 + Math.floor(rng.next() * 500), 1 + Math.floor(rng.next() * 500)];
      const [seed, step, sample] = [t, 1000 + t, t % 7];
      const v = t % 2;
      const full = sampleAugmentation(view, { height, width, channels: 3 }, seed, step, sample, v);
      assert.deepEqual(
        sampleCropAndFlip(view, height, width, seed, step, sample, v),
        { crop: full.crop, flip: full.flip },
        `${height}x${width}`,
      );
    }
  }
});

Deno.test({
  name:
    "augment: viewsFromCrops = augment() of the crops as whole, unflipped images, [3, 12, 12, 3]",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const [n, size] = [3, 12];
    const input = {
      height: size,
      width: size,
      channels: 3,
      mean: [0.4, 0.5, 0.6],
      std: [0.2, 0.3, 0.25],
    };
    const augmenter = new Augmenter(gpu, imagenetViews(), input, size);
    const rng = new Rng(9);
    const crops = [0, 1].map(() =>
      Uint8Array.from({ length: n * size * size * 3 }, () => Math.floor(rng.next() * 256))
    ) as [Uint8Array, Uint8Array];
    for (const step of [0, 1, 2]) {
      const got = augmenter.viewsFromCrops(crops, n, 5, step);
      // The reference: the same colour/blur/solarize draws of (seed, step, sample, view), the
      // crop the whole image (an exact identity resample) and no flip (the CPU did it).
      const expected = ([0, 1] as const).map((v) => {
        const images = uploadPixels(gpu, crops[v], [n, size, size, 3]);
        const samples = augmenter.sampleParams(n, 5, step, v).map((s) => ({
          ...s,
          crop: { top: 0, left: 0, height: size, width: size },
          flip: false,
        }));
        const out = augmenter.augment(images, samples, v);
        images.release();
        return out;
      });
      const [g1, g2, e1, e2] = await gpu.read([got.view1, got.view2, ...expected]);
      assert.deepEqual([g1, g2], [e1, e2], `step ${step}`);
      for (const t of [got.view1, got.view2, ...expected]) t.release();
    }
  },
});
