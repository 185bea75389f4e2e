/**
 * Kernel plans (kernels/plan.ts) are pure functions of shape and device: these tests need no GPU.
 * Two devices: a CPU adapter like lavapipe on 2 threads (direct loads, textures) and a GPU
 * (workgroup-memory staging, buffers), both with 32 KiB of workgroup memory. Expected plans are
 * worked out by hand from the cost model in the comments of plan.ts. Also: which kind of plan a
 * device runs (by adapter, or forced by KernelSettings.plan, --kernel-plan, TRITRAIN_KERNEL_PLAN).
 */
import assert from "node:assert/strict";
import {
  convBiasGradSlices,
  convInputGradPhases,
  convStaged,
  convTile,
  convWeightGradPlan,
  cpuPlans,
  matmulPlan,
  operandSource,
  type PlanDevice,
} from "../kernels/plan.ts";
import {
  DEFAULT_KERNEL_SETTINGS,
  KERNEL_PLAN_ENV,
  parsePlanKind,
  type PlanKind,
  resolvePlanKind,
} from "../runtime/gpu.ts";
import { kernelPlanSetting, UserError } from "../tasks/cli.ts";
import { parseTrainFlags, resolveConfig, runControl } from "../tasks/train_config.ts";

const CPU: PlanDevice = {
  isFallback: true,
  parallelSlots: 2,
  maxWorkgroupStorageBytes: 32768,
  maxBindingBytes: 2 ** 27,
  settings: DEFAULT_KERNEL_SETTINGS,
};
const GPU: PlanDevice = { ...CPU, isFallback: false, parallelSlots: 128, maxBindingBytes: 2 ** 30 };

/** A tile as (WG_X, WG_Y, TILE_M, TILE_N, staged) for compact comparisons. */
function tileOf(t: ReturnType<typeof convTile>) {
  return [t.substitute.WG_X, t.substitute.WG_Y, t.tileM, t.tileN, t.staged];
}

Deno.test("plan: operand source follows the setting, the adapter and whether operands fit", () => {
  assert.equal(operandSource("auto", CPU, true), "texture");
  assert.equal(operandSource("auto", GPU, true), "buffer");
  assert.equal(operandSource("texture", GPU, true), "texture");
  assert.equal(operandSource("buffer", CPU, true), "buffer");
  // Operands too big for a texture always use buffers.
  assert.equal(operandSource("texture", CPU, false), "buffer");
  assert.equal(operandSource("auto", CPU, false), "buffer");
});

Deno.test("plan: conv2d staging is by adapter unless a setting forces it", () => {
  assert.equal(convStaged(CPU), false);
  assert.equal(convStaged(GPU), true);
  const forced = (conv2dStaging: "workgroup" | "direct") => ({
    ...DEFAULT_KERNEL_SETTINGS,
    conv2dStaging,
  });
  assert.equal(convStaged({ ...CPU, settings: forced("workgroup") }), true);
  assert.equal(convStaged({ ...GPU, settings: forced("direct") }), false);
});

Deno.test("plan: matmul lanes along N and grid: 8 lanes for wide N, 4 for N = 64, 1 for N = 16", () => {
  // N = 200 > 64: 8 lanes of 16 columns (128 per workgroup), one lane row of 16 along M.
  assert.deepEqual(matmulPlan(3, 100, 200), { lanesN: 8, workgroups: [2, 7, 3] });
  // N = 64: 4 lanes (64 columns), two lane rows (32 rows per workgroup).
  assert.deepEqual(matmulPlan(1, 64, 64), { lanesN: 4, workgroups: [1, 2, 1] });
  // N = 16: 1 lane, 8 lane rows (128 rows per workgroup).
  assert.deepEqual(matmulPlan(1, 256, 16), { lanesN: 1, workgroups: [1, 2, 1] });
});

Deno.test("plan: conv2d forward tile, small preset layer1 3x3 8->8 @28 batch 64 (M = 50176)", () => {
  // N = 8: one lane along N. On the CPU WG_Y 16 and 8 tie (98 waves of 16 rows of 256 outputs
  // vs 196 waves of 8) and the larger is kept; workgroup memory allows at most 16.
  assert.deepEqual(tileOf(convTile(CPU, 50176, 8, false)), [1, 16, 256, 16, 0]);
  // On the GPU staging costs 0.9 (1 + 1/WG_Y) more per multiply-add: fewer waves of 16 rows win.
  assert.deepEqual(tileOf(convTile(GPU, 50176, 8, false)), [1, 16, 256, 16, 1]);
});

Deno.test("plan: conv2d forward tile, ResNet-50 1x1 64->256 expansion @56 batch 2 (M = 6272)", () => {
  // CPU: N > 128 takes 16 lanes (256 columns), so at most 4 lane rows; WG_Y 4, 2 and 1 tie at 49,
  // 98 and 196 waves and the first (largest) is kept.
  assert.deepEqual(tileOf(convTile(CPU, 6272, 256, false)), [16, 4, 64, 256, 0]);
  // GPU: 8 lanes (2 tiles along N); WG_Y 7 gives 56 x 2 = 112 tiles, one wave over 128 slots,
  // and the least work per tile of the one-wave choices (WG_Y 8 is also one wave, but larger).
  assert.deepEqual(tileOf(convTile(GPU, 6272, 256, false)), [8, 7, 112, 128, 1]);
});

Deno.test("plan: weight gradient of the 3x3 stem on gray images (M = 9) takes lane slices on CPUs", () => {
  // Small preset stem: 3x3 1->8 @28 batch 64, K = 50176 pixels. M = 9 fits one invocation's 16
  // rows, so each of the 8 lane rows takes its own slice: 8 x 2 slots x 8 lanes = 128 slices
  // wanted; 400-pixel slices (a multiple of 16) cover K in 126, rounded up to whole workgroups.
  assert.deepEqual(convWeightGradPlan(CPU, 9, 8, 50176), {
    tile: { tileM: 16, tileN: 16, staged: 0, substitute: { WG_X: 1, WG_Y: 8 } },
    slices: 128,
    sliceLen: 400,
    laneSlices: true,
    lanesPerSliceGroup: 8,
  });
  // The GPU stages tiles, so no lane slices: one 128 x 16 tile, 196 slices of the minimum 256.
  const gpuPlan = convWeightGradPlan(GPU, 9, 8, 50176);
  assert.deepEqual(tileOf(gpuPlan.tile), [1, 8, 128, 16, 1]);
  assert.deepEqual([gpuPlan.slices, gpuPlan.sliceLen, gpuPlan.laneSlices], [196, 256, false]);
});

Deno.test("plan: weight gradient of a 1x1 convolution of 8 input channels takes lane slices", () => {
  // Small preset layer2 downsample 1x1/2 8->16 @28 batch 64: M = 8, N = 16, K = 64 x 14 x 14.
  // 49 slices of 256 pixels (the minimum) cover K; rounded up to 7 workgroups of 8 lane slices.
  const plan = convWeightGradPlan(CPU, 8, 16, 12544);
  assert.deepEqual(tileOf(plan.tile), [1, 8, 16, 16, 0]);
  assert.deepEqual([plan.slices, plan.sliceLen, plan.laneSlices], [56, 256, true]);
});

Deno.test("plan: weight gradients of narrow layers with M <= 288 take lane slices on CPUs", () => {
  // Small preset layer2 3x3 16->16 @14 batch 64: M = 144, N = 16, K = 12544. 9 row blocks of 16;
  // ceil(8 x 2 slots x 8 lanes / 9) = 15 slices of 848 pixels, rounded up to 2 workgroups of 8.
  const plan = convWeightGradPlan(CPU, 144, 16, 12544);
  assert.deepEqual(tileOf(plan.tile), [1, 8, 16, 16, 0]);
  assert.deepEqual([plan.slices, plan.sliceLen, plan.laneSlices], [16, 848, true]);
  // Reference step stage 1, 3x3 32->32 @28: M = 288, N = 32 (4 rows of invocations).
  assert.equal(convWeightGradPlan(CPU, 288, 32, 50176).laneSlices, true);
  // Larger M (3x3 64->32) or 2 rows of invocations (N = 64) measured slower with lane slices.
  assert.equal(convWeightGradPlan(CPU, 576, 32, 12544).laneSlices, false);
  assert.equal(convWeightGradPlan(CPU, 288, 64, 12544).laneSlices, false);
  // GPU plans stage their tiles: no lane slices.
  assert.equal(convWeightGradPlan(GPU, 144, 16, 12544).laneSlices, false);
});

Deno.test("plan: weight gradient without lane slices when K is under 8 x 256 pixels", () => {
  // M = 9 but K = 1000: lane slices would be under the 256-pixel minimum. The sliced tile model
  // counts only work per tile: WG_Y 8 (one 128 x 16 tile); floor(1000 / 256) = 3 slices of 336.
  const plan = convWeightGradPlan(CPU, 9, 8, 1000);
  assert.deepEqual(tileOf(plan.tile), [1, 8, 128, 16, 0]);
  assert.deepEqual([plan.slices, plan.sliceLen, plan.laneSlices], [3, 336, false]);
});

Deno.test("plan: weight-gradient slices are capped so the scratch fits one binding", () => {
  // 3x3 256->256 (M = 2304, N = 256), K = 12544: 29 slices wanted, but a binding of three
  // M x N partial products allows 3, of ceil(12544 / 3) rounded up to 16 = 4192 pixels.
  const m = 2304;
  const n = 256;
  const plan = convWeightGradPlan({ ...GPU, maxBindingBytes: 3 * 4 * m * n }, m, n, 12544);
  assert.deepEqual([plan.slices, plan.sliceLen, plan.laneSlices], [3, 4192, false]);
  assert.deepEqual(tileOf(plan.tile), [8, 8, 128, 128, 1]);
});

Deno.test("plan: bias-gradient slices of about 64 rows, at most 256", () => {
  assert.deepEqual(convBiasGradSlices(50176), { slices: 256, sliceLen: 196 });
  assert.deepEqual(convBiasGradSlices(640), { slices: 10, sliceLen: 64 });
  assert.deepEqual(convBiasGradSlices(100), { slices: 1, sliceLen: 100 });
});

Deno.test("plan: input-gradient stride phases, zero fill only for a kernel smaller than the stride", () => {
  const phasesOf = (kernelSize: number, stride: number, padding: number, size: number) => {
    const plan = convInputGradPhases({
      batch: 2,
      inHeight: size,
      inWidth: size,
      kernelSize,
      stride,
      padding,
    });
    return { ...plan, phases: plan.phases.map((p) => [p.phaseH, p.phaseW, p.rows, p.cols, p.m]) };
  };
  // 1x1 stride 2 on 7x7: only even rows and columns are reached (4 x 4 of them); the rest zero.
  assert.deepEqual(phasesOf(1, 2, 0, 7), { phases: [[0, 0, 4, 4, 32]], zeroFill: true });
  // 3x3 stride 2 pad 1 on 7x7 (odd input): all four phases have taps; 4 even, 3 odd rows.
  assert.deepEqual(phasesOf(3, 2, 1, 7), {
    phases: [[0, 0, 4, 4, 32], [0, 1, 4, 3, 24], [1, 0, 3, 4, 24], [1, 1, 3, 3, 18]],
    zeroFill: false,
  });
  // Stride 1: one phase covering the whole input.
  assert.deepEqual(phasesOf(3, 1, 1, 5), { phases: [[0, 0, 5, 5, 50]], zeroFill: false });
});

/** `device` with its kernel plans forced to `plan`. */
function forcing(device: PlanDevice, plan: PlanKind): PlanDevice {
  return { ...device, settings: { ...device.settings, plan } };
}

Deno.test("plan kind: auto follows the adapter; gpu and cpu force the plans on any adapter", () => {
  assert.equal(resolvePlanKind("auto", true), "cpu");
  assert.equal(resolvePlanKind("auto", false), "gpu");
  assert.equal(resolvePlanKind("gpu", true), "gpu");
  assert.equal(resolvePlanKind("cpu", false), "cpu");
  assert.equal(cpuPlans(CPU), true);
  assert.equal(cpuPlans(GPU), false);
  // Forced GPU plans on the CPU adapter: buffers and staged tiles, as on a GPU.
  const gpuOnCpu = forcing(CPU, "gpu");
  assert.equal(operandSource("auto", gpuOnCpu, true), "buffer");
  assert.equal(convStaged(gpuOnCpu), true);
  assert.deepEqual(tileOf(convTile(gpuOnCpu, 50176, 8, false)), [1, 16, 256, 16, 1]);
  // Forced CPU plans on a GPU: textures and direct loads, as on lavapipe.
  const cpuOnGpu = forcing(GPU, "cpu");
  assert.equal(operandSource("auto", cpuOnGpu, true), "texture");
  assert.equal(convStaged(cpuOnGpu), false);
  assert.equal(convWeightGradPlan(cpuOnGpu, 9, 8, 50176).laneSlices, true);
  // An explicit setting still wins over the plan kind.
  const directGpuPlans: PlanDevice = {
    ...gpuOnCpu,
    settings: { ...gpuOnCpu.settings, conv2dStaging: "direct" },
  };
  assert.equal(convStaged(directGpuPlans), false);
  assert.equal(operandSource("texture", gpuOnCpu, true), "texture");
});

Deno.test("plan kind: names are parsed and unknown ones refused naming the source and choices", () => {
  assert.equal(parsePlanKind("gpu", KERNEL_PLAN_ENV), "gpu");
  assert.equal(parsePlanKind(undefined, KERNEL_PLAN_ENV), undefined);
  assert.equal(parsePlanKind("", KERNEL_PLAN_ENV), undefined);
  assert.throws(
    () => parsePlanKind("GPU", KERNEL_PLAN_ENV),
    /TRITRAIN_KERNEL_PLAN must be one of auto, gpu, cpu; got "GPU"/,
  );
});

/** Run `body` with TRITRAIN_KERNEL_PLAN set to `value` (unset when undefined), then restore it. */
function withPlanEnv<T>(value: string | undefined, body: () => T): T {
  const saved = Deno.env.get(KERNEL_PLAN_ENV);
  const set = (v: string | undefined) =>
    v === undefined ? Deno.env.delete(KERNEL_PLAN_ENV) : Deno.env.set(KERNEL_PLAN_ENV, v);
  set(value);
  try {
    return body();
  } finally {
    set(saved);
  }
}

Deno.test("plan kind: train's --kernel-plan beats TRITRAIN_KERNEL_PLAN, which beats auto", () => {
  const planOf = (args: string[]) => runControl(parseTrainFlags(args)).kernelPlan;
  withPlanEnv(undefined, () => {
    assert.equal(planOf([]), "auto");
    assert.equal(planOf(["--kernel-plan", "gpu"]), "gpu");
    assert.equal(kernelPlanSetting(undefined), "auto");
  });
  withPlanEnv("cpu", () => {
    assert.equal(planOf([]), "cpu");
    assert.equal(planOf(["--kernel-plan=gpu"]), "gpu");
  });
  // An invocation flag: not part of the run's recipe, and allowed with --resume.
  assert.deepEqual(resolveConfig(parseTrainFlags(["--kernel-plan", "gpu"])).overrides, {});
});

Deno.test("plan kind: an unknown --kernel-plan or TRITRAIN_KERNEL_PLAN is a UserError (exit 2)", () => {
  const refused = (body: () => unknown, message: RegExp) =>
    assert.throws(
      body,
      (e) => e instanceof UserError && e.exitCode === 2 && message.test(e.message),
    );
  withPlanEnv(undefined, () =>
    refused(
      () => runControl(parseTrainFlags(["--kernel-plan", "tpu"])),
      /--kernel-plan must be one of auto, gpu, cpu; got "tpu"/,
    ));
  withPlanEnv("fast", () => {
    refused(
      () => kernelPlanSetting(undefined),
      /TRITRAIN_KERNEL_PLAN must be one of auto, gpu, cpu; got "fast" \(or unset it/,
    );
    // The flag, when given, is used and the environment not read.
    assert.equal(kernelPlanSetting("cpu"), "cpu");
  });
});

Deno.test("plan kind: a bad TRITRAIN_KERNEL_PLAN stops a task with exit 2, but not its --help", async () => {
  const eval_ = new URL("../tasks/eval.ts", import.meta.url).pathname;
  const run = async (args: string[]) => {
    const result = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-webgpu", eval_, ...args],
      env: { TRITRAIN_KERNEL_PLAN: "fast" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = (b: Uint8Array) => new TextDecoder().decode(b);
    return { code: result.code, stdout: text(result.stdout), stderr: text(result.stderr) };
  };
  const help = await run(["--help"]);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^usage: /);
  const refused = await run(["--checkpoint", "missing.safetensors"]);
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /TRITRAIN_KERNEL_PLAN must be one of auto, gpu, cpu; got "fast"/);
});
