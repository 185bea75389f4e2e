/**
 * One torchvision ResNet-50 Bottleneck block with downsample (inplanes 64, planes 32 -> 128,
 * stride 2, input 2 x 9 x 9, train-mode BatchNorm) run forward and backward with our kernels,
 * against PyTorch float64 values from tests/golden/make_bottleneck.py.
 *
 *   a1 = relu(bn1(conv1x1(x)))              conv 64 -> 32
 *   a2 = relu(bn2(conv3x3 stride 2(a1)))     conv 32 -> 32, 9x9 -> 5x5
 *   b3 = bn3(conv1x1(a2))                    conv 32 -> 128
 *   sc = bnd(conv1x1 stride 2(x))            conv 64 -> 128, the downsample shortcut
 *   out = relu(b3 + sc)
 */
import { assertClose, gpuTest, testGpu } from "./util.ts";
import type { Tensor } from "../runtime/gpu.ts";
import {
  conv2dForward,
  conv2dInputGrad,
  conv2dOutputSize,
  type Conv2dShape,
  conv2dWeightGrad,
} from "../kernels/conv2d.ts";
import {
  batchNormBackward,
  type BatchNormShape,
  batchNormTrainForward,
} from "../kernels/batchnorm.ts";
import { addRelu, addReluBackward } from "../kernels/residual.ts";
import { add } from "../kernels/elementwise.ts";

interface Manifest {
  config: {
    batch: number;
    height: number;
    width: number;
    inplanes: number;
    planes: number;
    outChannels: number;
    stride: number;
    eps: number;
    momentum: number;
    outHeight: number;
    outWidth: number;
  };
  tensors: Record<string, { shape: number[]; offset: number }>;
}

const goldenDir = new URL("./golden/", import.meta.url);

function loadGolden() {
  const manifest: Manifest = JSON.parse(
    Deno.readTextFileSync(new URL("bottleneck.json", goldenDir)),
  );
  const bytes = Deno.readFileSync(new URL("bottleneck.bin", goldenDir));
  const all = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const get = (name: string) => {
    const entry = manifest.tensors[name];
    if (!entry) throw new Error(`golden tensor ${name} missing from bottleneck.json`);
    const size = entry.shape.reduce((a, b) => a * b, 1);
    return { shape: entry.shape, data: all.subarray(entry.offset, entry.offset + size) };
  };
  return { config: manifest.config, get };
}

/**
 * Tolerance for a whole tensor: float64 reference, float32 kernels. Convolutions sum up to 576
 * products and BatchNorm divides by a batch standard deviation, so errors scale with the tensor's
 * magnitude: atol is relative to the largest |expected| value. On lavapipe the worst element is
 * ~3e-7 of the peak, so these bounds leave room for other GPUs' summation orders.
 */
function tolerance(expected: ArrayLike<number>, relative: number) {
  let peak = 0;
  for (let i = 0; i < expected.length; i++) peak = Math.max(peak, Math.abs(expected[i]));
  return { atol: relative * peak, rtol: relative };
}
const FORWARD_RELATIVE = 1e-5;
const BACKWARD_RELATIVE = 2e-5;

/** A conv + BatchNorm layer's parameters, state and cached activations. */
interface ConvBn {
  name: string;
  conv: Conv2dShape;
  bn: BatchNormShape;
  weight: Tensor;
  gamma: Tensor;
  beta: Tensor;
  runningMean: Tensor;
  runningVar: Tensor;
  convOut: Tensor;
  bnOut: Tensor;
  saveMean: Tensor;
  saveInvStd: Tensor;
  dWeight: Tensor;
  dGamma: Tensor;
  dBeta: Tensor;
  dConvOut: Tensor;
}

Deno.test({
  name: "bottleneck golden: torchvision Bottleneck(64, 32, stride 2, downsample) train-mode " +
    `forward + backward vs PyTorch float64 (tol ${FORWARD_RELATIVE} fwd / ${BACKWARD_RELATIVE} ` +
    "bwd, relative to each tensor's peak, plus the same rtol)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const { config: cfg, get } = loadGolden();
    const upload = (name: string) => {
      const t = get(name);
      return gpu.upload(t.data, t.shape);
    };
    const layer = (
      name: string,
      bnName: string,
      inChannels: number,
      outChannels: number,
      kernelSize: number,
      stride: number,
      inHeight: number,
    ): ConvBn => {
      const conv: Conv2dShape = {
        batch: cfg.batch,
        inHeight,
        inWidth: inHeight,
        inChannels,
        outChannels,
        kernelSize,
        stride,
        padding: (kernelSize - 1) / 2,
      };
      const { outHeight, outWidth } = conv2dOutputSize(conv);
      const outShape = [cfg.batch, outHeight, outWidth, outChannels];
      const rows = cfg.batch * outHeight * outWidth;
      const weight = upload(`${name}.weight`);
      return {
        name,
        conv,
        bn: { rows, channels: outChannels, eps: cfg.eps, momentum: cfg.momentum },
        weight,
        gamma: upload(`${bnName}.weight`),
        beta: upload(`${bnName}.bias`),
        runningMean: upload(`${bnName}.running_mean`),
        runningVar: upload(`${bnName}.running_var`),
        convOut: gpu.empty(outShape),
        bnOut: gpu.empty(outShape),
        saveMean: gpu.empty([outChannels]),
        saveInvStd: gpu.empty([outChannels]),
        dWeight: gpu.empty(weight.shape),
        dGamma: gpu.empty([outChannels]),
        dBeta: gpu.empty([outChannels]),
        dConvOut: gpu.empty(outShape),
      };
    };
    const width = cfg.planes;
    const l1 = layer("conv1", "bn1", cfg.inplanes, width, 1, 1, cfg.height);
    const l2 = layer("conv2", "bn2", width, width, 3, cfg.stride, cfg.height);
    const l3 = layer("conv3", "bn3", width, cfg.outChannels, 1, 1, cfg.outHeight);
    const ld = layer(
      "downsample.0",
      "downsample.1",
      cfg.inplanes,
      cfg.outChannels,
      1,
      cfg.stride,
      cfg.height,
    );
    const layers = [l1, l2, l3, ld];

    const x = upload("x");
    const dOut = upload("dOut");
    const out = gpu.empty(dOut.shape);
    const dSum = gpu.empty(dOut.shape);
    const da2 = gpu.empty(l2.bnOut.shape);
    const da1 = gpu.empty(l1.bnOut.shape);
    const dxMain = gpu.empty(x.shape);
    const dxShortcut = gpu.empty(x.shape);
    const dx = gpu.empty(x.shape);

    const forward = (l: ConvBn, input: Tensor, relu: boolean) => {
      conv2dForward(gpu, input, l.weight, null, l.convOut, l.conv);
      batchNormTrainForward(
        gpu,
        l.convOut,
        l.gamma,
        l.beta,
        l.runningMean,
        l.runningVar,
        l.bnOut,
        l.saveMean,
        l.saveInvStd,
        l.bn,
        { relu },
      );
    };
    const backward = (l: ConvBn, input: Tensor, dBnOut: Tensor, relu: boolean, dInput: Tensor) => {
      batchNormBackward(
        gpu,
        l.convOut,
        dBnOut,
        l.gamma,
        l.saveMean,
        l.saveInvStd,
        l.dConvOut,
        l.dGamma,
        l.dBeta,
        l.bn,
        relu ? { reluOutput: l.bnOut } : {},
      );
      conv2dWeightGrad(gpu, input, l.dConvOut, l.dWeight, l.conv);
      conv2dInputGrad(gpu, l.dConvOut, l.weight, dInput, l.conv);
    };

    forward(l1, x, true);
    forward(l2, l1.bnOut, true);
    forward(l3, l2.bnOut, false);
    forward(ld, x, false);
    addRelu(gpu, l3.bnOut, ld.bnOut, out);

    addReluBackward(gpu, out, dOut, dSum);
    backward(l3, l2.bnOut, dSum, false, da2);
    backward(l2, l1.bnOut, da2, true, da1);
    backward(l1, x, da1, true, dxMain);
    backward(ld, x, dSum, false, dxShortcut);
    add(gpu, dxMain, dxShortcut, dx);

    const checks: [Tensor, string, number][] = [
      [l1.bnOut, "intermediate/bn1_relu", FORWARD_RELATIVE],
      [l2.bnOut, "intermediate/bn2_relu", FORWARD_RELATIVE],
      [l3.bnOut, "intermediate/bn3", FORWARD_RELATIVE],
      [ld.bnOut, "intermediate/downsample_bn", FORWARD_RELATIVE],
      [out, "out", FORWARD_RELATIVE],
      [dx, "grad/x", BACKWARD_RELATIVE],
    ];
    for (const l of layers) {
      const bnName = l === ld ? "downsample.1" : l.name.replace("conv", "bn");
      checks.push(
        [l.dWeight, `grad/${l.name}.weight`, BACKWARD_RELATIVE],
        [l.dGamma, `grad/${bnName}.weight`, BACKWARD_RELATIVE],
        [l.dBeta, `grad/${bnName}.bias`, BACKWARD_RELATIVE],
        [l.runningMean, `updated/${bnName}.running_mean`, FORWARD_RELATIVE],
        [l.runningVar, `updated/${bnName}.running_var`, FORWARD_RELATIVE],
      );
    }
    const got = await gpu.read(checks.map(([t]) => t));
    checks.forEach(([, name, relative], i) => {
      const expected = get(name).data;
      assertClose(got[i], expected, tolerance(expected, relative), name);
    });

    release([x, dOut, out, dSum, da2, da1, dxMain, dxShortcut, dx]);
    for (const l of layers) {
      release([
        l.weight,
        l.gamma,
        l.beta,
        l.runningMean,
        l.runningVar,
        l.convOut,
        l.bnOut,
        l.saveMean,
        l.saveInvStd,
        l.dWeight,
        l.dGamma,
        l.dBeta,
        l.dConvOut,
      ]);
    }
  },
});

function release(tensors: Tensor[]): void {
  for (const t of tensors) t.release();
}
