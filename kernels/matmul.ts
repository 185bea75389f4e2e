/** Matrix multiply C = op(A)·op(B) (+ bias) (+= C), plain or batched; the GEMM behind Linear. */
import { type Gpu, OPERAND_TEXTURE_WIDTH, packUniforms, type Tensor } from "../runtime/gpu.ts";
import { kernelFile } from "../runtime/shader.ts";
import { matmulPlan, operandSource } from "./plan.ts";

/** `main` reads a, b (or their textures) and bias, writes c; `copy_padded` copies source to target. */
const MATMUL = kernelFile("matmul", [
  "a",
  "copySource",
  "b",
  "copyTarget",
  "c",
  null,
  "bias",
  "aTexture",
  "bTexture",
]);

/** Options for {@link matmul}. */
export interface MatmulOptions {
  /** A is stored [K, M] (or [batch, K, M]) and used transposed. */
  transposeA?: boolean;
  /** B is stored [N, K] (or [batch, N, K]) and used transposed (torch's Linear weight layout). */
  transposeB?: boolean;
  /** [N] values added to every row of the result. */
  bias?: Tensor;
  /** Add the result to `out` instead of overwriting it (gradient accumulation). */
  accumulate?: boolean;
}

/** The shapes of one matmul call, derived and checked. */
export interface MatmulShape {
  batch: number;
  m: number;
  n: number;
  k: number;
  /** B is shared by every matrix of a batched A (rank-2 B with rank-3 A). */
  sharedB: boolean;
}

function describe(t: Tensor): string {
  return `[${t.shape.join(", ")}]`;
}

/**
 * Derive (batch, M, N, K) from the operands' shapes and the transposes, or throw naming the
 * mismatch. A is [M, K] ([K, M] transposed), B is [K, N] ([N, K] transposed), out is [M, N];
 * rank-3 shapes add a leading batch dimension (B may stay rank 2 to be shared by the batch).
 */
export function matmulShape(
  a: Tensor,
  b: Tensor,
  out: Tensor,
  options: MatmulOptions = {},
): MatmulShape {
  const rankA = a.shape.length;
  const rankB = b.shape.length;
  if (rankA !== 2 && rankA !== 3) {
    throw new Error(`matmul: A must be a matrix or a batch of matrices, got ${describe(a)}`);
  }
  if (rankB !== 2 && rankB !== 3) {
    throw new Error(`matmul: B must be a matrix or a batch of matrices, got ${describe(b)}`);
  }
  if (rankB > rankA) {
    throw new Error(`matmul: B ${describe(b)} is batched but A ${describe(a)} is not`);
  }
  if (out.shape.length !== rankA) {
    throw new Error(`matmul: out ${describe(out)} must have the rank of A ${describe(a)}`);
  }
  const batch = rankA === 3 ? a.shape[0] : 1;
  if (rankB === 3 && b.shape[0] !== batch) {
    throw new Error(`matmul: batch of B ${describe(b)} differs from A ${describe(a)}`);
  }
  if (rankA === 3 && out.shape[0] !== batch) {
    throw new Error(`matmul: batch of out ${describe(out)} differs from A ${describe(a)}`);
  }
  const [a0, a1] = a.shape.slice(rankA - 2);
  const [b0, b1] = b.shape.slice(rankB - 2);
  const [m, kA] = options.transposeA ? [a1, a0] : [a0, a1];
  const [kB, n] = options.transposeB ? [b1, b0] : [b0, b1];
  if (kA !== kB) {
    throw new Error(
      `matmul: inner dimensions differ: op(A) is ${m}x${kA} from A ${describe(a)}` +
        `${options.transposeA ? " (transposed)" : ""}, op(B) is ${kB}x${n} from B ${describe(b)}` +
        `${options.transposeB ? " (transposed)" : ""}`,
    );
  }
  const [outM, outN] = out.shape.slice(rankA - 2);
  if (outM !== m || outN !== n) {
    throw new Error(
      `matmul: out ${describe(out)} should be ${m}x${n} (op(A) ${m}x${kA}, op(B) ${kB}x${n})`,
    );
  }
  for (const [name, t] of [["A", a], ["B", b], ["out", out]] as const) {
    if (t.dtype !== "f32") throw new Error(`matmul: ${name} must be f32, got ${t.dtype}`);
  }
  if (options.bias) {
    if (options.bias.size !== n || options.bias.dtype !== "f32") {
      throw new Error(`matmul: bias ${describe(options.bias)} must hold N = ${n} f32 values`);
    }
  }
  for (const [name, t] of [["A", a], ["B", b], ["bias", options.bias]] as const) {
    if (t && t.buffer === out.buffer) {
      throw new Error(`matmul: out must not share its buffer with ${name}`);
    }
  }
  return { batch, m, n, k: kA, sharedB: rankB === 2 && rankA === 3 };
}

/** Per-device 16-byte buffer bound as the bias of calls without one. */
const placeholders = new WeakMap<Gpu, GPUBuffer>();

function noBias(gpu: Gpu): GPUBuffer {
  let buffer = placeholders.get(gpu);
  if (!buffer) {
    buffer = gpu.device.createBuffer({
      label: "matmul-no-bias",
      size: 16,
      usage: GPUBufferUsage.STORAGE,
    });
    placeholders.set(gpu, buffer);
  }
  return buffer;
}

function roundUp4(x: number): number {
  return Math.ceil(x / 4) * 4;
}

/** Copy each [rows, cols] matrix of a batch into the top-left of a zero-filled [rows2, cols2]
 * matrix of `target` (or the top-left [rows2, cols2] of it, when `target` is smaller). */
function copyPadded(
  gpu: Gpu,
  source: Tensor,
  target: Tensor,
  batch: number,
  [rows, cols]: [number, number],
  [rows2, cols2]: [number, number],
): void {
  const maxPerDim = gpu.limits.maxComputeWorkgroupsPerDimension;
  gpu.dispatch(gpu.kernel(MATMUL, { entryPoint: "copy_padded" }), {
    uniforms: packUniforms([["u32", rows], ["u32", cols], ["u32", rows2], ["u32", cols2]]),
    storage: { copySource: source, copyTarget: target },
    workgroups: [Math.ceil(cols2 / 64), Math.min(rows2, maxPerDim), batch],
  });
}

/** A stored matrix as the kernel reads it: rows x cols per matrix, cols a multiple of 4. */
interface Operand {
  tensor: Tensor;
  cols: number;
  /** Set when `tensor` is a padded temporary to release after the dispatch. */
  temporary: boolean;
}

/**
 * The operand itself when its rows are vec4-readable, else a zero-padded copy: each stored
 * row rounded up to a multiple of 4 values, and (`padRows`) rows rounded up to a multiple of 4
 * (when rows run along K, so that the padded K sees zeros in both operands).
 */
function vec4Readable(
  gpu: Gpu,
  t: Tensor,
  batch: number,
  rows: number,
  cols: number,
  padRows: boolean,
): Operand {
  const rowsPadded = padRows ? roundUp4(rows) : rows;
  const colsPadded = roundUp4(cols);
  if (rowsPadded === rows && colsPadded === cols) return { tensor: t, cols, temporary: false };
  const padded = gpu.empty([batch, rowsPadded, colsPadded]);
  copyPadded(gpu, t, padded, batch, [rows, cols], [rowsPadded, colsPadded]);
  return { tensor: padded, cols: colsPadded, temporary: true };
}

/**
 * C = op(A)·op(B) (+ bias) into `out` (or `out +=` with `accumulate`), where op transposes when
 * asked: A is [M, K] or [K, M], B is [K, N] or [N, K], out is [M, N]; rank-3 tensors are batches.
 * Matrices whose rows are not a multiple of 4 long (and A and B when K is not) go through
 * zero-padded temporaries, so the multiply always reads and writes vec4.
 */
export function matmul(
  gpu: Gpu,
  a: Tensor,
  b: Tensor,
  out: Tensor,
  options: MatmulOptions = {},
): void {
  const { batch, m, n, k, sharedB } = matmulShape(a, b, out, options);
  if (batch === 0 || m === 0 || n === 0) return;
  const transposeA = options.transposeA ?? false;
  const transposeB = options.transposeB ?? false;
  const { lanesN, workgroups } = matmulPlan(batch, m, n);
  const maxPerDim = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (workgroups.some((w) => w > maxPerDim)) {
    throw new Error(
      `matmul: ${batch}x${m}x${n} needs a grid of ${workgroups.join("x")} workgroups, over ` +
        `${maxPerDim} per dimension`,
    );
  }
  // Stored layouts: A [M, K] or [K, M]; B [K, N] or [N, K]. Rows along K get padded rows.
  const kPadded = roundUp4(k);
  const opA = transposeA
    ? vec4Readable(gpu, a, batch, k, m, k !== kPadded)
    : vec4Readable(gpu, a, batch, m, k, false);
  const batchB = sharedB ? 1 : batch;
  const opB = transposeB
    ? vec4Readable(gpu, b, batchB, n, k, false)
    : vec4Readable(gpu, b, batchB, k, n, k !== kPadded);
  const aRows = transposeA ? kPadded : m;
  const bRows = transposeB ? n : kPadded;
  // C with rows a multiple of 4 long: `out` itself, or a padded temporary copied back after.
  const nPadded = roundUp4(n);
  const c = nPadded === n ? out : gpu.empty([batch, m, nPadded]);
  if (c !== out && options.accumulate) copyPadded(gpu, out, c, batch, [m, n], [m, nPadded]);
  const fit = gpu.fitsOperandTexture(opA.tensor) && gpu.fitsOperandTexture(opB.tensor);
  const useTextures = operandSource(gpu.settings.matmulOperands, gpu, fit) === "texture";
  const textureA = useTextures ? gpu.operandTexture(opA.tensor) : undefined;
  const textureB = useTextures ? gpu.operandTexture(opB.tensor) : undefined;
  const placeholder = useTextures ? undefined : gpu.placeholderTexture();
  gpu.dispatch(
    gpu.kernel(MATMUL, {
      constants: {
        TRANSPOSE_A: transposeA ? 1 : 0,
        TRANSPOSE_B: transposeB ? 1 : 0,
        ...(useTextures ? { TEXTURE_OPERANDS: 1, TEXTURE_WIDTH: OPERAND_TEXTURE_WIDTH } : {}),
      },
    }),
    {
      uniforms: packUniforms([
        ["u32", m],
        ["u32", n],
        ["u32", kPadded / 4],
        ["u32", opA.cols / 4],
        ["u32", opB.cols / 4],
        ["u32", nPadded / 4],
        ["u32", (aRows * opA.cols) / 4],
        ["u32", sharedB ? 0 : (bRows * opB.cols) / 4],
        ["u32", (m * nPadded) / 4],
        ["u32", options.bias ? 1 : 0],
        ["u32", options.accumulate ? 1 : 0],
        ["u32", lanesN],
      ]),
      storage: {
        a: opA.tensor,
        b: opB.tensor,
        c,
        bias: options.bias ?? noBias(gpu),
        aTexture: textureA?.view ?? placeholder!,
        bTexture: textureB?.view ?? placeholder!,
      },
      workgroups,
    },
  );
  textureA?.release();
  textureB?.release();
  if (c !== out) {
    copyPadded(gpu, c, out, batch, [m, nPadded], [m, n]);
    c.release();
  }
  if (opA.temporary) opA.tensor.release();
  if (opB.temporary) opB.tensor.release();
}

/** S = P_hat Z_hat^T [n, n]: cosines between unit rows (the shared GEMM, B transposed). */
export function cosineSimilarity(gpu: Gpu, pHat: Tensor, zHat: Tensor, s: Tensor): void {
  const [n, dim] = pHat.shape;
  if (pHat.shape.length !== 2 || zHat.shape.length !== 2 || zHat.shape[1] !== dim) {
    throw new Error(
      `cosineSimilarity: pHat [${pHat.shape}] and zHat [${zHat.shape}] must be [*, d]`,
    );
  }
  if (s.shape.length !== 2 || s.shape[0] !== n || s.shape[1] !== zHat.shape[0]) {
    throw new Error(`cosineSimilarity: s must be [${n}, ${zHat.shape[0]}], got [${s.shape}]`);
  }
  matmul(gpu, pHat, zHat, s, { transposeB: true });
}
