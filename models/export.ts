/**
 * Export of a trained backbone for PyTorch: the backbone's tensors alone (safetensors, torchvision
 * names and layouts) and a generated Python file that needs only `torch`. The file builds the exact
 * module (any arch, widths, input channels, small-image or torchvision stem), reads the
 * safetensors file with a tiny reader of its own, and loads the weights with `strict=True`.
 */
import { ARCHITECTURES, type ResNetConfig } from "./resnet.ts";
import {
  type HostTensor,
  type SafetensorsFile,
  saveSafetensors,
  writeFileAtomic,
} from "./safetensors.ts";

/** One tensor of a backbone: torchvision name, shape and dtype. */
export interface BackboneTensor {
  name: string;
  shape: number[];
  dtype: "F32" | "I64";
}

function batchNormTensors(name: string, channels: number): BackboneTensor[] {
  return [
    { name: `${name}.weight`, shape: [channels], dtype: "F32" },
    { name: `${name}.bias`, shape: [channels], dtype: "F32" },
    { name: `${name}.running_mean`, shape: [channels], dtype: "F32" },
    { name: `${name}.running_var`, shape: [channels], dtype: "F32" },
    { name: `${name}.num_batches_tracked`, shape: [], dtype: "I64" },
  ];
}

function convTensor(name: string, out: number, inC: number, kernel: number): BackboneTensor {
  return { name: `${name}.weight`, shape: [out, inC, kernel, kernel], dtype: "F32" };
}

/**
 * Every tensor of a backbone's state_dict in torchvision's order (what
 * `torchvision.models.resnetNN().state_dict()` holds, less `fc.*`), computed from its config.
 */
export function backboneLayout(config: ResNetConfig): BackboneTensor[] {
  const spec = ARCHITECTURES[config.arch];
  if (!spec) throw new Error(`unknown backbone arch ${JSON.stringify(config.arch)}`);
  const expansion = spec.block === "basic" ? 1 : 4;
  const stemKernel = config.smallImage ? 3 : 7;
  const tensors = [
    convTensor("conv1", config.widths[0], config.inChannels, stemKernel),
    ...batchNormTensors("bn1", config.widths[0]),
  ];
  let inC = config.widths[0];
  spec.blocks.forEach((count, stage) => {
    const planes = config.widths[stage];
    for (let i = 0; i < count; i++) {
      const stride = i === 0 && stage > 0 ? 2 : 1;
      const name = `layer${stage + 1}.${i}`;
      const outC = planes * expansion;
      if (spec.block === "basic") {
        tensors.push(convTensor(`${name}.conv1`, planes, inC, 3));
        tensors.push(...batchNormTensors(`${name}.bn1`, planes));
        tensors.push(convTensor(`${name}.conv2`, planes, planes, 3));
        tensors.push(...batchNormTensors(`${name}.bn2`, planes));
      } else {
        tensors.push(convTensor(`${name}.conv1`, planes, inC, 1));
        tensors.push(...batchNormTensors(`${name}.bn1`, planes));
        tensors.push(convTensor(`${name}.conv2`, planes, planes, 3));
        tensors.push(...batchNormTensors(`${name}.bn2`, planes));
        tensors.push(convTensor(`${name}.conv3`, outC, planes, 1));
        tensors.push(...batchNormTensors(`${name}.bn3`, outC));
      }
      if (stride !== 1 || inC !== outC) {
        tensors.push(convTensor(`${name}.downsample.0`, outC, inC, 1));
        tensors.push(...batchNormTensors(`${name}.downsample.1`, outC));
      }
      inC = outC;
    }
  });
  return tensors;
}

/** Feature dimension of a backbone (the width of its pooled output). */
export function backboneFeatureDim(config: ResNetConfig): number {
  return config.widths[3] * (ARCHITECTURES[config.arch].block === "basic" ? 1 : 4);
}

/**
 * The backbone's tensors out of a checkpoint (dropping heads, target network and optimizer
 * state); every tensor the config needs must be there with its shape and dtype.
 */
export function backboneTensors(
  checkpoint: SafetensorsFile,
  config: ResNetConfig,
  source: string,
): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const expected of backboneLayout(config)) {
    const tensor = checkpoint.tensors.get(expected.name);
    if (!tensor) {
      throw new Error(
        `${source}: tensor ${expected.name} is missing (was the checkpoint saved by another model?)`,
      );
    }
    if (tensor.dtype !== expected.dtype || tensor.shape.join("x") !== expected.shape.join("x")) {
      throw new Error(
        `${source}: tensor ${expected.name} is ${tensor.dtype} [${tensor.shape}], the backbone ` +
          `config needs ${expected.dtype} [${expected.shape}]`,
      );
    }
    out.set(expected.name, tensor);
  }
  return out;
}

/** What the generated Python file states about the inputs the backbone expects. */
export interface ExportInputs {
  /** Training image size (height = width). */
  imageSize: number;
  /** Per-channel normalisation used in training ((x/255 - mean) / std), if known. */
  mean?: number[];
  std?: number[];
  /** The weights file name, looked up beside the Python file. */
  weightsFile: string;
}

/** A Python literal for a list of numbers. */
function pythonList(values: readonly number[]): string {
  return `[${values.map((v) => String(v)).join(", ")}]`;
}

/** The generated Python module: builds the backbone of `config` and loads `inputs.weightsFile`. */
export function pytorchModuleSource(config: ResNetConfig, inputs: ExportInputs): string {
  const spec = ARCHITECTURES[config.arch];
  const normalisation = inputs.mean && inputs.std
    ? `MEAN = ${pythonList(inputs.mean)}\nSTD = ${pythonList(inputs.std)}`
    : `MEAN = None  # unknown: normalise as the training data was\nSTD = None`;
  const side = inputs.imageSize;
  const stem = config.smallImage
    ? "small-image stem (3x3 stride 1, no max pool)"
    : "torchvision stem (7x7 stride 2, max pool)";
  const featureDim = backboneFeatureDim(config);
  return `"""A tritrain backbone for PyTorch, generated by \`deno task export\`; needs only torch (1.10+).

    import torch, backbone
    model = backbone.load()   # reads ${inputs.weightsFile} beside this file, strict=True, eval mode
    features = model(images)  # images [N, ${config.inChannels}, ${side}, ${side}] float32 -> [N, ${featureDim}]

Normalise images as training did: (pixels / 255 - MEAN[c]) / STD[c].
Architecture: ${config.arch}, widths ${
    pythonList(config.widths)
  }, ${config.inChannels} input channel(s), ${stem}.
Parameter names and layouts are torchvision's; there is no fc layer (forward returns the pooled
features).
"""
import json
import os
import struct

import torch
from torch import nn

ARCH = ${JSON.stringify(config.arch)}
BLOCK = ${JSON.stringify(spec.block)}
BLOCKS = ${pythonList(spec.blocks)}
WIDTHS = ${pythonList(config.widths)}
IN_CHANNELS = ${config.inChannels}
SMALL_IMAGE = ${config.smallImage ? "True" : "False"}
IMAGE_SIZE = ${side}
FEATURE_DIM = ${featureDim}
${normalisation}
WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), ${
    JSON.stringify(inputs.weightsFile)
  })


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, planes, stride):
        super().__init__()
        out_channels = planes * 4
        self.conv1 = nn.Conv2d(in_channels, planes, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride here (v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Backbone(nn.Module):
    """torchvision's ResNet without fc; images [N, C, H, W] -> features [N, FEATURE_DIM]."""

    def __init__(self):
        super().__init__()
        if SMALL_IMAGE:
            self.conv1 = nn.Conv2d(IN_CHANNELS, WIDTHS[0], 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(IN_CHANNELS, WIDTHS[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if SMALL_IMAGE else nn.MaxPool2d(3, 2, 1)
        block = BasicBlock if BLOCK == "basic" else Bottleneck
        in_channels = WIDTHS[0]
        for stage, (count, planes) in enumerate(zip(BLOCKS, WIDTHS)):
            blocks = []
            for i in range(count):
                stride = 2 if i == 0 and stage > 0 else 1
                blocks.append(block(in_channels, planes, stride))
                in_channels = planes * block.expansion
            setattr(self, "layer%d" % (stage + 1), nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


_DTYPES = {"F32": (torch.float32, 4), "I64": (torch.int64, 8), "U32": (torch.int32, 4)}


def read_safetensors(path):
    """A safetensors file as {name: tensor} (8-byte little-endian header length, JSON header, data)."""
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    start = 8 + length
    state = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, size = _DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        count = (end - begin) // size
        values = torch.frombuffer(bytearray(data[start + begin:start + end]), dtype=dtype,
                                  count=count) if count > 0 else torch.empty(0, dtype=dtype)
        state[name] = values.reshape(entry["shape"]).clone()
    return state


def load(path=WEIGHTS):
    """The backbone with the exported weights loaded strictly, in eval mode."""
    model = Backbone()
    model.load_state_dict(read_safetensors(path), strict=True)
    return model.eval()


if __name__ == "__main__":
    model = load()
    images = torch.zeros(2, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        print("loaded %s strictly; features %s" % (WEIGHTS, tuple(model(images).shape)))
`;
}

/** Format marker of an exported backbone file. */
export const BACKBONE_FORMAT = "tritrain-backbone-1";

/**
 * Write `<dir>/<name>.safetensors` (backbone tensors only) and `<dir>/<name>.py` (the module that
 * builds and loads it); both atomically. Returns the two paths.
 */
export async function writeBackboneExport(
  checkpoint: SafetensorsFile,
  config: ResNetConfig,
  inputs: Omit<ExportInputs, "weightsFile">,
  dir: string,
  name: string,
  source: string,
): Promise<{ weights: string; python: string }> {
  const tensors = backboneTensors(checkpoint, config, source);
  const weightsFile = `${name}.safetensors`;
  const weights = `${dir}/${weightsFile}`;
  const python = `${dir}/${name}.py`;
  await saveSafetensors(weights, {
    tensors,
    metadata: { format: BACKBONE_FORMAT, backbone: JSON.stringify(config) },
  });
  const text = pytorchModuleSource(config, { ...inputs, weightsFile });
  await writeFileAtomic(python, new TextEncoder().encode(text));
  return { weights, python };
}
