/** Elementwise ops (fill, copy, add, scale, axpy, axpby, ReLU forward/backward). */
import { type Gpu, grid1d, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";

const ELEMENTWISE = kernelFile("elementwise", ["a", "b", "out"]);

const ELEMENTS_PER_WORKGROUP = 256 * 4;

type Entry =
  | "fill"
  | "copy"
  | "add"
  | "scale"
  | "axpy"
  | "axpby"
  | "relu_forward"
  | "relu_backward";

function run(
  gpu: Gpu,
  entryPoint: Entry,
  n: number,
  a: Tensor | null,
  b: Tensor | null,
  out: Tensor,
  alpha = 0,
  beta = 0,
): void {
  for (const t of [a, b]) {
    if (t && t.size < n) throw new Error(`${entryPoint}: input has ${t.size} < ${n} elements`);
  }
  if (out.size < n) throw new Error(`${entryPoint}: output has ${out.size} < ${n} elements`);
  gpu.dispatch(gpu.kernel(ELEMENTWISE, { entryPoint }), {
    uniforms: packUniforms([["u32", n], ["f32", alpha], ["f32", beta], ["u32", 0]]),
    storage: { a, b, out },
    workgroups: grid1d(
      Math.ceil(n / ELEMENTS_PER_WORKGROUP),
      gpu.limits.maxComputeWorkgroupsPerDimension,
    ),
  });
}

/** out[i] = value */
export function fill(gpu: Gpu, out: Tensor, value: number): void {
  run(gpu, "fill", out.size, null, null, out, value);
}

/** out[i] = a[i] */
export function copy(gpu: Gpu, a: Tensor, out: Tensor): void {
  run(gpu, "copy", a.size, a, null, out);
}

/** out[i] = a[i] + b[i] */
export function add(gpu: Gpu, a: Tensor, b: Tensor, out: Tensor): void {
  run(gpu, "add", a.size, a, b, out);
}

/** out[i] = alpha * a[i] */
export function scale(gpu: Gpu, a: Tensor, alpha: number, out: Tensor): void {
  run(gpu, "scale", a.size, a, null, out, alpha);
}

/** out[i] += alpha * a[i] (gradient accumulation, SGD-like updates). */
export function axpy(gpu: Gpu, alpha: number, a: Tensor, out: Tensor): void {
  run(gpu, "axpy", a.size, a, null, out, alpha);
}

/** out[i] = alpha * a[i] + beta * b[i] (EMA, interpolation). */
export function axpby(
  gpu: Gpu,
  alpha: number,
  a: Tensor,
  beta: number,
  b: Tensor,
  out: Tensor,
): void {
  run(gpu, "axpby", a.size, a, b, out, alpha, beta);
}

/** out[i] = max(x[i], 0) */
export function reluForward(gpu: Gpu, x: Tensor, out: Tensor): void {
  run(gpu, "relu_forward", x.size, x, null, out);
}

/** dx[i] = dy[i] where the forward value (input or output) was positive, else 0. */
export function reluBackward(gpu: Gpu, forwardValue: Tensor, dy: Tensor, dx: Tensor): void {
  run(gpu, "relu_backward", dy.size, forwardValue, dy, dx);
}
