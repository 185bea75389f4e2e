/** Rebuild a backbone from a checkpoint for evaluation and embedding. */
import type { Gpu } from "../runtime/gpu.ts";
import { Rng } from "../runtime/random.ts";
import { Context } from "./layers.ts";
import { ResNet, type ResNetConfig } from "./resnet.ts";
import { loadBackboneInto, readCheckpoint } from "./checkpoint.ts";
import type { SslModelConfig } from "./ssl.ts";

/** The online backbone of a checkpoint, in eval mode, with the config it was trained with. */
export async function loadBackbone(
  gpu: Gpu,
  path: string,
): Promise<{ backbone: ResNet; config: ResNetConfig; state: Record<string, unknown> }> {
  return backboneFromCheckpoint(gpu, await readCheckpoint(path), path);
}

/** {@link loadBackbone} from a checkpoint already read (readCheckpoint) from `path`. */
export function backboneFromCheckpoint(
  gpu: Gpu,
  { file, config, state }: Awaited<ReturnType<typeof readCheckpoint>>,
  path: string,
): { backbone: ResNet; config: ResNetConfig; state: Record<string, unknown> } {
  const model = config as SslModelConfig;
  if (!model?.backbone?.arch) {
    throw new Error(`${path}: checkpoint metadata has no backbone config`);
  }
  const ctx = new Context(gpu);
  ctx.mode = "eval";
  const backbone = new ResNet(ctx, model.backbone, new Rng(0));
  loadBackboneInto(file, backbone.parameters(), backbone.states(), path);
  return { backbone, config: model.backbone, state };
}
