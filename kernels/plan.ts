/**
 * Kernel plans: how matmul and conv2d are tiled and where they read their operands, as pure
 * functions of the problem's shape and a {@link PlanDevice} (the few device facts and settings a
 * plan depends on). The launch wrappers (`matmul.ts`, `conv2d.ts`) only carry plans out, so plans
 * are testable without a device (tests/kernel_plan_test.ts).
 *
 * Two kinds of plan, picked by adapter or forced ({@link cpuPlans}): CPU plans (lavapipe: direct
 * loads from textures, one workgroup per CPU thread) and GPU plans (buffers, conv tiles staged in
 * workgroup memory, 128 parallel slots). The GPU plans' workgroups of up to 64 invocations match
 * tfjs-backend-webgpu's conv2d_mm / matmul_packed ([8, 8, 1]); their per-invocation 16 x 16
 * register block (fixed by the WGSL, tuned on lavapipe) is 16x tfjs's 4 x 4 and burn/cubecl's,
 * and the matmul's 8-invocation workgroups fill a quarter of a 32-wide warp: what a GPU run of
 * bench/device-check.sh measures before either changes.
 */
import {
  ceilDiv,
  type Gpu,
  type KernelSettings,
  type OperandSource,
  resolvePlanKind,
} from "../runtime/gpu.ts";
import type { Conv2dShape } from "./conv2d.ts";

/** What a plan needs to know about the device. */
export interface PlanDevice {
  /** A fallback (CPU) adapter such as lavapipe. */
  isFallback: boolean;
  /**
   * Workgroups the device runs at once (as the plan kind models it): lavapipe runs one per CPU
   * thread; for a GPU, a round number of a few per compute unit.
   */
  parallelSlots: number;
  /** maxComputeWorkgroupStorageSize. */
  maxWorkgroupStorageBytes: number;
  /** maxStorageBufferBindingSize. */
  maxBindingBytes: number;
  settings: KernelSettings;
}

/**
 * Whether plans are made for a CPU adapter: by the adapter, unless `settings.plan` forces a kind
 * (KernelSettings.plan; env TRITRAIN_KERNEL_PLAN, flag --kernel-plan). Every per-device choice
 * below goes through this, so forcing "gpu" on lavapipe runs exactly the GPU plans.
 */
export function cpuPlans(device: Pick<PlanDevice, "isFallback" | "settings">): boolean {
  return resolvePlanKind(device.settings.plan, device.isFallback) === "cpu";
}

/** The plan facts of a live device. */
export function planDevice(gpu: Gpu): PlanDevice {
  return {
    isFallback: gpu.isFallback,
    // WebGPU does not expose a GPU's compute units: 128 is a few workgroups per unit of a
    // mid-range GPU.
    parallelSlots: cpuPlans(gpu) ? navigator.hardwareConcurrency || 2 : 128,
    maxWorkgroupStorageBytes: gpu.limits.maxComputeWorkgroupStorageSize,
    maxBindingBytes: gpu.maxBindingBytes,
    settings: gpu.settings,
  };
}

/**
 * Where a GEMM reads its operands: textures when asked ("texture"), or by default ("auto") under
 * CPU plans (fallback adapters such as lavapipe, whose per-lane texture loads cost about a third
 * of storage-buffer loads); buffers otherwise, and always when an operand does not fit a texture.
 */
export function operandSource(
  mode: OperandSource,
  device: Pick<PlanDevice, "isFallback" | "settings">,
  operandsFitTextures: boolean,
): "texture" | "buffer" {
  const wanted = mode === "texture" || (mode === "auto" && cpuPlans(device));
  return wanted && operandsFitTextures ? "texture" : "buffer";
}

// ---- matmul ----

/** Each matmul invocation computes a MATMUL_BLOCK x MATMUL_BLOCK block of C; 8 per workgroup. */
export const MATMUL_BLOCK = 16;

/** How one matmul call is tiled. */
export interface MatmulPlan {
  /** Invocations side by side along N (the rest of the 8 stack along M): the LANES_N uniform. */
  lanesN: number;
  /** Workgroup counts (x over N, y over M, z over the batch). */
  workgroups: [number, number, number];
}

/**
 * Lanes along N: all 8 when N is wide, which measured fastest (lanes then share rows of A), fewer
 * for narrow N, whose blocks would otherwise mostly fall outside the matrix (N = 64: 4 lanes ran
 * 2x faster than 8; N = 16: 1 lane 5x).
 */
export function matmulPlan(batch: number, m: number, n: number): MatmulPlan {
  const lanesN = n > 4 * MATMUL_BLOCK ? 8 : n > 2 * MATMUL_BLOCK ? 4 : 1;
  return {
    lanesN,
    workgroups: [
      Math.ceil(n / (MATMUL_BLOCK * lanesN)),
      Math.ceil(m / (MATMUL_BLOCK * (8 / lanesN))),
      batch,
    ],
  };
}

// ---- conv2d ----

/** A conv2d GEMM tile: the workgroup's thread grid, each invocation owning 16 x 16 outputs. */
export interface TileShape {
  tileM: number;
  tileN: number;
  /** The STAGED override: 1 to stage tiles in workgroup memory, 0 for direct loads. */
  staged: number;
  substitute: Record<string, number>;
}

export function tileShape(wgX: number, wgY: number, staged: boolean): TileShape {
  return {
    tileM: 16 * wgY,
    tileN: 16 * wgX,
    staged: staged ? 1 : 0,
    substitute: { WG_X: wgX, WG_Y: wgY },
  };
}

/** For the conv2d entry points that do not tile (bias gradient, slice reduction). */
export const DEFAULT_TILE: TileShape = tileShape(4, 4, false);

/** Whether conv2d's tiles stage their operands in workgroup memory (by default: GPU plans). */
export function convStaged(device: Pick<PlanDevice, "isFallback" | "settings">): boolean {
  const mode = device.settings.conv2dStaging;
  return mode === "workgroup" || (mode === "auto" && !cpuPlans(device));
}

/** Workgroup memory per unit of WG_X + WG_Y: TILE_K (16) x 16 floats of 4 bytes. */
const TILE_BYTES_PER_WG_ROW = 16 * 16 * 4;

/**
 * Invocations side by side along N (16 columns each): N with little waste, at most 8, or 16 on
 * CPU adapters when N > 128. There a workgroup covering 256 columns measured up to 2x faster on
 * short-K products such as ResNet-50's 1x1 64 -> 256 expansion (K = 64, where the 16 x 16 block
 * stores weigh most), and within noise on the others.
 */
function columnLanes(n: number, direct: boolean): number {
  if (direct && n > 128) return 16;
  return n > 64 ? 8 : n > 32 ? 4 : n > 16 ? 2 : 1;
}

/**
 * Pick the workgroup's thread grid (and so TILE_M x TILE_N) of an M x N conv GEMM. WG_X covers N
 * with little waste. WG_Y (up to 64 invocations, within workgroup memory, counts that are
 * multiples of 8 so no SIMD lane of a CPU adapter idles) minimises a simple time model: waves of
 * workgroups over the device's parallel slots, times the work of one tile, which grows with
 * padding and, when staged, with staging (per multiply-add, staging costs ~0.9 (1/WG_X + 1/WG_Y)
 * of the inner loop's, measured on lavapipe). With `sliced`, K slices supply the parallelism, so
 * only the per-tile work counts.
 */
export function convTile(device: PlanDevice, m: number, n: number, sliced: boolean): TileShape {
  const staged = convStaged(device);
  const wgX = columnLanes(n, !staged);
  const storageRows = Math.floor(device.maxWorkgroupStorageBytes / TILE_BYTES_PER_WG_ROW);
  const maxWgY = Math.max(1, Math.min(Math.floor(64 / wgX), 16, storageRows - wgX));
  const tilesN = ceilDiv(n, 16 * wgX);
  const staging = staged ? 0.9 : 0;
  let best = 8 / wgX;
  let bestTime = Infinity;
  for (let wgY = maxWgY; wgY >= 1; wgY--) {
    if ((wgX * wgY) % 8 !== 0) continue;
    const tiles = ceilDiv(m, 16 * wgY) * tilesN;
    const tileWork = 256 * wgX * wgY * (1 + staging * (1 / wgX + 1 / wgY));
    const time = (sliced ? tiles : ceilDiv(tiles, device.parallelSlots)) * tileWork;
    if (time < bestTime) {
      best = wgY;
      bestTime = time;
    }
  }
  return tileShape(wgX, best, staging > 0);
}

/** How the weight gradient's GEMM (M x N, K = pixels) is tiled and its pixel sum split. */
export interface WeightGradPlan {
  tile: TileShape;
  /** K slices in all (each writes one partial product when there is more than one). */
  slices: number;
  /** Pixels per slice, a multiple of 16. */
  sliceLen: number;
  /** Each row of invocations in a workgroup takes its own slice (the LANE_SLICES override). */
  laneSlices: boolean;
  /** Slices per workgroup: WG_Y with lane slices, else 1. */
  lanesPerSliceGroup: number;
}

/** Slices keep at least this many pixels, so the scratch and second pass stay small. */
const MIN_SLICE_PIXELS = 256;
/**
 * Lane slices also pay for narrow layers (N <= 32: at least 4 rows of invocations) up to this M,
 * measured on lavapipe (12-02, per call, lane slices vs row tiles): M = 144, N = 16 (3x3 16 -> 16
 * at 14x14) 1.9x; M = 288, N = 32 (3x3 32 -> 32 at 28x28) 1.75x; M = 72, N = 8 1.07x; but
 * M = 576, N = 32 0.53x and M = 576, N = 16 0.52x, and with 2 rows of invocations (N = 64)
 * 0.5-0.6x.
 */
const LANE_SLICE_MAX_ROWS = 288;

/**
 * Tile and split the weight gradient (M = kernel taps x input channels, N = output channels, K =
 * pixels). Usually a workgroup tiles M x N and grid z runs over K slices. When M fits one
 * invocation's 16 rows (the 3x3 stem on gray images: M = 9; 1x1 convolutions of <= 16 input
 * channels) and invocations load directly (CPU adapters), the workgroup's rows of invocations
 * would mostly load rows past M and be discarded; instead each row of invocations takes its own
 * K slice. The same layout is used for narrow layers with a small M (LANE_SLICE_MAX_ROWS).
 */
export function convWeightGradPlan(
  device: PlanDevice,
  m: number,
  n: number,
  pixels: number,
): WeightGradPlan {
  const direct = !convStaged(device);
  const wgX = columnLanes(n, direct);
  const laneRows = Math.max(1, 8 / wgX);
  const laneSlices = direct && laneRows > 1 && pixels >= MIN_SLICE_PIXELS * laneRows &&
    (m <= 16 || (laneRows >= 4 && m <= LANE_SLICE_MAX_ROWS));
  const tile = laneSlices
    ? { ...tileShape(wgX, laneRows, false), tileM: 16 }
    : convTile(device, m, n, true);
  const lanesPerSliceGroup = laneSlices ? laneRows : 1;
  const tiles = ceilDiv(m, tile.tileM) * ceilDiv(n, tile.tileN);
  // Several waves of workgroups balance the load.
  const wantedSlices = ceilDiv(8 * device.parallelSlots * lanesPerSliceGroup, tiles);
  let slices = Math.max(1, Math.min(wantedSlices, Math.floor(pixels / MIN_SLICE_PIXELS)));
  // The scratch must fit in one binding.
  const maxSlices = Math.floor(device.maxBindingBytes / (4 * m * n));
  slices = Math.max(1, Math.min(slices, maxSlices));
  const sliceLen = ceilDiv(ceilDiv(pixels, slices), 16) * 16;
  slices = ceilDiv(pixels, sliceLen);
  // Whole workgroups of lane slices: the last ones may start past the pixels and write zeros.
  if (laneSlices) slices = ceilDiv(slices, lanesPerSliceGroup) * lanesPerSliceGroup;
  return { tile, slices, sliceLen, laneSlices, lanesPerSliceGroup };
}

/** One stride phase of the input gradient: its GEMM has M = batch x rows x cols output pixels. */
export interface InputGradPhase {
  phaseH: number;
  phaseW: number;
  rows: number;
  cols: number;
  m: number;
}

/**
 * The input gradient's GEMMs: one per stride phase (input row and column mod stride) that some
 * kernel tap reaches (taps kh = first, first + stride, ... < kernelSize with first = (phase +
 * padding) mod stride). When some phase has no taps (a kernel smaller than the stride, 1x1
 * stride 2), `zeroFill`: dx is cleared first, since those pixels get no GEMM.
 */
export function convInputGradPhases(
  s: Pick<Conv2dShape, "batch" | "inHeight" | "inWidth" | "kernelSize" | "stride" | "padding">,
): { phases: InputGradPhase[]; zeroFill: boolean } {
  const taps = (phase: number) => {
    const first = (phase + s.padding) % s.stride;
    return first >= s.kernelSize ? 0 : ceilDiv(s.kernelSize - first, s.stride);
  };
  const strides = Array.from({ length: s.stride }, (_, p) => p);
  const phases: InputGradPhase[] = [];
  for (const phaseH of strides) {
    for (const phaseW of strides) {
      const rows = ceilDiv(s.inHeight - phaseH, s.stride);
      const cols = ceilDiv(s.inWidth - phaseW, s.stride);
      if (rows <= 0 || cols <= 0 || taps(phaseH) * taps(phaseW) === 0) continue;
      phases.push({ phaseH, phaseW, rows, cols, m: s.batch * rows * cols });
    }
  }
  return { phases, zeroFill: strides.some((p) => taps(p) === 0) };
}

/**
 * The bias gradient's row slices: each invocation sums one column quad over a slice of rows; aim
 * for ~64-row slices, at most 256 of them, so the second pass stays short.
 */
export function convBiasGradSlices(rows: number): { slices: number; sliceLen: number } {
  const slices = Math.max(1, Math.min(256, Math.floor(rows / 64)));
  return { slices, sliceLen: ceilDiv(rows, slices) };
}
