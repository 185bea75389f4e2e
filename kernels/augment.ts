/**
 * Per-sample image augmentation kernels (see augment.wgsl): uint8 unpacking, crop + resize +
 * flip, colour jitter + grayscale, Gaussian blur + solarize + normalise, and the bilinear batch
 * rescale. Images are NHWC f32; `params` holds one {@link AUGMENT_PARAM_STRIDE}-float record per
 * sample (built by data/augment_params.ts).
 */
import { type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const AUGMENT = kernelFile("augment", ["src", "params", "dst", "packed"]);

/** Floats per sample in the parameter buffer (layout documented in augment.wgsl). */
export const AUGMENT_PARAM_STRIDE = 16;

const WORKGROUP = 256;

/** Resampling filter of the crop resize. */
export type ResampleFilter = "bilinear" | "bicubic";

interface DimsFields {
  n: number;
  inH: number;
  inW: number;
  channels: number;
  outH: number;
  outW: number;
  filter?: ResampleFilter;
  blurRadius?: number;
  count?: number;
  solarizeThreshold?: number;
  mean?: readonly number[];
  std?: readonly number[];
}

function dimsUniforms(d: DimsFields): ArrayBuffer {
  const mean = [0, 1, 2, 3].map((c) => d.mean?.[c] ?? 0);
  const std = [0, 1, 2, 3].map((c) => d.std?.[c] ?? 1);
  return packUniforms([
    ["u32", d.n],
    ["u32", d.inH],
    ["u32", d.inW],
    ["u32", d.channels],
    ["u32", d.outH],
    ["u32", d.outW],
    ["u32", d.filter === "bicubic" ? 1 : 0],
    ["u32", d.blurRadius ?? 0],
    ["u32", d.count ?? 0],
    ["f32", d.solarizeThreshold ?? 0.5],
    ["u32", 0],
    ["u32", 0],
    ...mean.map((v) => ["f32", v] as ["f32", number]),
    ...std.map((v) => ["f32", v] as ["f32", number]),
  ]);
}

function perPixelGrid(gpu: Gpu, threads: number): [number, number] {
  return grid1d(Math.ceil(threads / WORKGROUP), gpu.limits.maxComputeWorkgroupsPerDimension);
}

function nhwc(t: Tensor, what: string): [number, number, number, number] {
  if (t.shape.length !== 4) throw new Error(`${what}: expected [N, H, W, C], got [${t.shape}]`);
  if (t.dtype !== "f32") throw new Error(`${what}: expected f32, got ${t.dtype}`);
  const [n, h, w, c] = t.shape;
  if (c < 1 || c > 4) throw new Error(`${what}: ${c} channels; 1 to 4 are supported`);
  return [n, h, w, c];
}

function checkParams(params: Tensor, n: number, what: string): void {
  if (params.dtype !== "f32" || params.size < n * AUGMENT_PARAM_STRIDE) {
    throw new Error(
      `${what}: params need ${n} records of ${AUGMENT_PARAM_STRIDE} f32, got [${params.shape}] ` +
        params.dtype,
    );
  }
}

/**
 * Convert `count` bytes packed 4 per u32 word (little-endian, as a Uint8Array's buffer) into
 * f32 values byte / 255 in `out`.
 */
export function unpackBytes(gpu: Gpu, packed: Tensor, count: number, out: Tensor): void {
  if (packed.dtype !== "u32" || packed.size * 4 < count) {
    throw new Error(`unpackBytes: ${count} bytes need ${Math.ceil(count / 4)} u32 words`);
  }
  if (out.dtype !== "f32" || out.size < count) {
    throw new Error(`unpackBytes: output [${out.shape}] holds fewer than ${count} f32 values`);
  }
  gpu.dispatch(gpu.kernel(AUGMENT, { entryPoint: "unpack_bytes" }), {
    uniforms: dimsUniforms({ n: 0, inH: 0, inW: 0, channels: 1, outH: 0, outW: 0, count }),
    storage: { dst: out, packed },
    workgroups: perPixelGrid(gpu, count),
  });
}

/**
 * Crop each sample's box (params 0-3) out of `images` [N, H, W, C], resize it to `out`'s
 * [N, S, S', C] with the Pillow-style antialiased filter, mirroring the columns where the flip
 * flag is set; results are clamped to [0, 1].
 */
export function cropResizeFlip(
  gpu: Gpu,
  images: Tensor,
  params: Tensor,
  out: Tensor,
  filter: ResampleFilter,
): void {
  const [n, inH, inW, channels] = nhwc(images, "cropResizeFlip input");
  const [outN, outH, outW, outC] = nhwc(out, "cropResizeFlip output");
  if (outN !== n || outC !== channels) {
    throw new Error(`cropResizeFlip: input [${images.shape}] and output [${out.shape}] disagree`);
  }
  checkParams(params, n, "cropResizeFlip");
  const dims = dimsUniforms({ n, inH, inW, channels, outH, outW, filter });
  // Rows pass output: every input row, out_w columns (rows outside a crop are never read).
  const wide = gpu.empty([n, inH, outW, channels], "f32", "augment.wide");
  gpu.dispatch(gpu.kernel(AUGMENT, { entryPoint: "resample_rows" }), {
    uniforms: dims,
    storage: { src: images, params, dst: wide },
    workgroups: perPixelGrid(gpu, n * inH * outW),
  });
  gpu.dispatch(gpu.kernel(AUGMENT, { entryPoint: "resample_cols" }), {
    uniforms: dims,
    storage: { src: wide, params, dst: out },
    workgroups: perPixelGrid(gpu, n * outH * outW),
  });
  wide.release();
}

/**
 * In place on `images` [N, H, W, C] in [0, 1]: colour jitter (brightness, contrast, saturation,
 * hue in each sample's order) where flagged, then grayscale where flagged. Saturation, hue and
 * grayscale need 3 channels and are skipped otherwise.
 */
export function colourJitterGrayscale(gpu: Gpu, images: Tensor, params: Tensor): void {
  const [n, h, w, channels] = nhwc(images, "colourJitterGrayscale");
  checkParams(params, n, "colourJitterGrayscale");
  gpu.dispatch(gpu.kernel(AUGMENT, { entryPoint: "colour" }), {
    uniforms: dimsUniforms({ n, inH: h, inW: w, channels, outH: h, outW: w }),
    storage: { params, dst: images },
    workgroups: grid1d(n, gpu.limits.maxComputeWorkgroupsPerDimension),
  });
}

/** Options of {@link blurSolarizeNormalize}. */
export interface FinishOptions {
  mean: readonly number[];
  std: readonly number[];
  /** Solarize inverts values >= this (METHOD.md: 0.5). */
  solarizeThreshold: number;
  /** Fixed Gaussian kernel size (odd, torchvision convention); undefined: 2 * ceil(3 sigma) + 1. */
  blurKernelSize?: number;
}

/**
 * `out` = normalise(solarize(blur(images))): separable Gaussian blur with the sample's sigma
 * (param 12; 0 = none; edges replicated), solarize where flagged, then (x - mean[c]) / std[c].
 */
export function blurSolarizeNormalize(
  gpu: Gpu,
  images: Tensor,
  params: Tensor,
  out: Tensor,
  options: FinishOptions,
): void {
  const [n, h, w, channels] = nhwc(images, "blurSolarizeNormalize input");
  if (out.shape.join() !== images.shape.join()) {
    throw new Error(`blurSolarizeNormalize: output [${out.shape}] != input [${images.shape}]`);
  }
  checkParams(params, n, "blurSolarizeNormalize");
  if (options.mean.length !== channels || options.std.length !== channels) {
    throw new Error(`blurSolarizeNormalize: mean/std need ${channels} values`);
  }
  const kernelSize = options.blurKernelSize;
  if (kernelSize !== undefined && (!Number.isInteger(kernelSize) || kernelSize % 2 !== 1)) {
    throw new Error(`blurSolarizeNormalize: blur kernel size must be odd, not ${kernelSize}`);
  }
  const dims = dimsUniforms({
    n,
    inH: h,
    inW: w,
    channels,
    outH: h,
    outW: w,
    blurRadius: kernelSize === undefined ? 0 : (kernelSize - 1) / 2,
    solarizeThreshold: options.solarizeThreshold,
    mean: options.mean,
    std: options.std,
  });
  const blurred = gpu.empty(images.shape, "f32", "augment.blur");
  const grid = perPixelGrid(gpu, n * h * w);
  gpu.dispatch(gpu.kernel(AUGMENT, { entryPoint: "blur_rows" }), {
    uniforms: dims,
    storage: { src: images, params, dst: blurred },
    workgroups: grid,
  });
  gpu.dispatch(gpu.kernel(AUGMENT, { entryPoint: "blur_cols_finish" }), {
    uniforms: dims,
    storage: { src: blurred, params, dst: out },
    workgroups: grid,
  });
  blurred.release();
}

/**
 * Resize every image of `images` [N, H, W, C] to `out` [N, H', W', C] like torch's
 * F.interpolate(mode="bilinear", align_corners=False) (no antialiasing).
 */
export function rescaleBilinear(gpu: Gpu, images: Tensor, out: Tensor): void {
  const [n, inH, inW, channels] = nhwc(images, "rescaleBilinear input");
  const [outN, outH, outW, outC] = nhwc(out, "rescaleBilinear output");
  if (outN !== n || outC !== channels) {
    throw new Error(`rescaleBilinear: input [${images.shape}] and output [${out.shape}] disagree`);
  }
  gpu.dispatch(gpu.kernel(AUGMENT, { entryPoint: "rescale_bilinear" }), {
    uniforms: dimsUniforms({ n, inH, inW, channels, outH, outW }),
    storage: { src: images, dst: out },
    workgroups: perPixelGrid(gpu, n * outH * outW),
  });
}
