/**
 * Pooling on NHWC activations: max pool (3x3, stride 2, padding 1 by default: the ResNet stem)
 * with a saved argmax and a gather backward, and global average pooling [N, H, W, C] -> [N, C].
 */
import { ceilDiv, type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const POOL = kernelFile("pool", ["input", "argmax", "output"]);

/** An NHWC activation's shape. */
export interface PoolShape {
  batch: number;
  height: number;
  width: number;
  channels: number;
}

/** A max pool window (defaults 3, 2, 1). */
export interface MaxPoolWindow {
  kernelSize?: number;
  stride?: number;
  padding?: number;
}

const WORKGROUP_THREADS = 256;

function windowOf(w: MaxPoolWindow): Required<MaxPoolWindow> {
  return { kernelSize: w.kernelSize ?? 3, stride: w.stride ?? 2, padding: w.padding ?? 1 };
}

/** Output height and width of a max pool: floor((H + 2 * padding - kernel) / stride) + 1. */
export function maxPoolOutputSize(
  s: PoolShape,
  window: MaxPoolWindow = {},
): { height: number; width: number } {
  const { kernelSize, stride, padding } = windowOf(window);
  return {
    height: Math.floor((s.height + 2 * padding - kernelSize) / stride) + 1,
    width: Math.floor((s.width + 2 * padding - kernelSize) / stride) + 1,
  };
}

function checkShape(name: string, s: PoolShape): void {
  for (const key of ["batch", "height", "width", "channels"] as const) {
    if (!Number.isInteger(s[key]) || s[key] < 1) {
      throw new Error(`${name}: ${key} must be a positive integer, got ${s[key]}`);
    }
  }
  if (s.batch * s.height * s.width * s.channels >= 2 ** 32) {
    throw new Error(`${name}: tensor exceeds 2^32 elements`);
  }
}

function checkWindow(name: string, s: PoolShape, window: MaxPoolWindow) {
  const w = windowOf(window);
  if (!Number.isInteger(w.kernelSize) || w.kernelSize < 1) {
    throw new Error(`${name}: kernelSize must be a positive integer`);
  }
  if (!Number.isInteger(w.stride) || w.stride < 1) throw new Error(`${name}: stride must be >= 1`);
  // PyTorch's rule; it also guarantees every window holds at least one real pixel.
  if (!Number.isInteger(w.padding) || w.padding < 0 || w.padding > w.kernelSize / 2) {
    throw new Error(`${name}: padding must be an integer in [0, kernelSize / 2], got ${w.padding}`);
  }
  const out = maxPoolOutputSize(s, window);
  if (out.height < 1 || out.width < 1) {
    throw new Error(`${name}: input ${s.height}x${s.width} is smaller than the window`);
  }
  return { ...w, ...out };
}

function checkSize(name: string, label: string, t: Tensor, want: number, dtype = "f32"): void {
  if (t.size !== want) {
    throw new Error(
      `${name}: ${label} has shape [${t.shape}] (${t.size} values), expected ${want}`,
    );
  }
  if (t.dtype !== dtype) throw new Error(`${name}: ${label} must be ${dtype}`);
}

function run(
  gpu: Gpu,
  entryPoint: string,
  s: PoolShape,
  outHeight: number,
  outWidth: number,
  window: Required<MaxPoolWindow>,
  total: number,
  storage: { input: Tensor; argmax?: Tensor; output: Tensor },
): void {
  gpu.dispatch(gpu.kernel(POOL, { entryPoint }), {
    uniforms: packUniforms([
      ["u32", s.batch],
      ["u32", s.height],
      ["u32", s.width],
      ["u32", s.channels],
      ["u32", outHeight],
      ["u32", outWidth],
      ["u32", window.kernelSize],
      ["u32", window.stride],
      ["u32", window.padding],
      ["u32", total],
      ["u32", 0],
      ["u32", 0],
    ]),
    storage,
    workgroups: grid1d(
      ceilDiv(total, WORKGROUP_THREADS),
      gpu.limits.maxComputeWorkgroupsPerDimension,
    ),
  });
}

/**
 * Max pool forward: y [N, OH, OW, C] holds each window's maximum and argmax (u32, same shape)
 * its flat spatial index ih * W + iw; ties go to the first index in (kh, kw) order.
 */
export function maxPoolForward(
  gpu: Gpu,
  x: Tensor,
  y: Tensor,
  argmax: Tensor,
  s: PoolShape,
  window: MaxPoolWindow = {},
): void {
  const name = "maxPoolForward";
  checkShape(name, s);
  const w = checkWindow(name, s, window);
  const outSize = s.batch * w.height * w.width * s.channels;
  checkSize(name, "x", x, s.batch * s.height * s.width * s.channels);
  checkSize(name, "y", y, outSize);
  checkSize(name, "argmax", argmax, outSize, "u32");
  run(gpu, "maxpool_forward", s, w.height, w.width, w, outSize, { input: x, argmax, output: y });
}

/** Max pool backward: dx [N, H, W, C] (overwritten) gathers dy at each window's saved argmax. */
export function maxPoolBackward(
  gpu: Gpu,
  dy: Tensor,
  argmax: Tensor,
  dx: Tensor,
  s: PoolShape,
  window: MaxPoolWindow = {},
): void {
  const name = "maxPoolBackward";
  checkShape(name, s);
  const w = checkWindow(name, s, window);
  const outSize = s.batch * w.height * w.width * s.channels;
  const inSize = s.batch * s.height * s.width * s.channels;
  checkSize(name, "dy", dy, outSize);
  checkSize(name, "argmax", argmax, outSize, "u32");
  checkSize(name, "dx", dx, inSize);
  run(gpu, "maxpool_backward", s, w.height, w.width, w, inSize, { input: dy, argmax, output: dx });
}

/** Global average pool forward: y[n, c] = mean over (h, w) of x[n, h, w, c]. */
export function globalAvgPoolForward(gpu: Gpu, x: Tensor, y: Tensor, s: PoolShape): void {
  const name = "globalAvgPoolForward";
  checkShape(name, s);
  checkSize(name, "x", x, s.batch * s.height * s.width * s.channels);
  checkSize(name, "y", y, s.batch * s.channels);
  run(gpu, "avgpool_forward", s, 1, 1, windowOf({}), s.batch * s.channels, { input: x, output: y });
}

/** Global average pool backward: dx[n, h, w, c] = dy[n, c] / (H * W) (overwritten). */
export function globalAvgPoolBackward(gpu: Gpu, dy: Tensor, dx: Tensor, s: PoolShape): void {
  const name = "globalAvgPoolBackward";
  checkShape(name, s);
  const inSize = s.batch * s.height * s.width * s.channels;
  checkSize(name, "dy", dy, s.batch * s.channels);
  checkSize(name, "dx", dx, inSize);
  run(gpu, "avgpool_backward", s, 1, 1, windowOf({}), inSize, { input: dy, output: dx });
}
