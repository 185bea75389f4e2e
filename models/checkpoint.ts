/**
 * Checkpoints in safetensors. The online backbone is stored under torchvision's own names and
 * layouts (OIHW conv weights, `num_batches_tracked` as int64), so
 * `torchvision.models.resnet50().load_state_dict(state, strict=False)` finds every key but
 * `fc.*`. Heads, the target network (`target.` prefix), the LARS velocity (`optimizer.velocity.`)
 * and the training position (metadata) make a run resumable.
 */
import type { Gpu, Tensor } from "../runtime/gpu.ts";
import type { BatchCounter, Parameter, StateTensor } from "./layers.ts";
import type { Branch, SslModel } from "./ssl.ts";
import {
  type HostTensor,
  loadSafetensors,
  type SafetensorsFile,
  saveSafetensors,
} from "./safetensors.ts";

/** Format marker written into every checkpoint. */
export const CHECKPOINT_FORMAT = "tritrain-1";

/** HWIO [kh, kw, in, out] -> OIHW [out, in, kh, kw]. */
export function hwioToOihw(
  data: Float32Array,
  shape: number[],
): { data: Float32Array; shape: number[] } {
  const [kh, kw, ci, co] = shape;
  const out = new Float32Array(data.length);
  for (let y = 0; y < kh; y++) {
    for (let x = 0; x < kw; x++) {
      for (let i = 0; i < ci; i++) {
        for (let o = 0; o < co; o++) {
          out[((o * ci + i) * kh + y) * kw + x] = data[((y * kw + x) * ci + i) * co + o];
        }
      }
    }
  }
  return { data: out, shape: [co, ci, kh, kw] };
}

/** OIHW [out, in, kh, kw] -> HWIO [kh, kw, in, out]. */
export function oihwToHwio(
  data: Float32Array,
  shape: number[],
): { data: Float32Array; shape: number[] } {
  const [co, ci, kh, kw] = shape;
  const out = new Float32Array(data.length);
  for (let o = 0; o < co; o++) {
    for (let i = 0; i < ci; i++) {
      for (let y = 0; y < kh; y++) {
        for (let x = 0; x < kw; x++) {
          out[((y * kw + x) * ci + i) * co + o] = data[((o * ci + i) * kh + y) * kw + x];
        }
      }
    }
  }
  return { data: out, shape: [kh, kw, ci, co] };
}

interface Entry {
  name: string;
  tensor: Tensor;
  layout: "hwio" | "plain";
}

function entriesOf(
  prefix: string,
  parameters: Parameter[],
  states: StateTensor[],
): Entry[] {
  return [
    ...parameters.map((p) => ({ name: prefix + p.name, tensor: p.value, layout: p.layout })),
    ...states.map((s) => ({ name: prefix + s.name, tensor: s.value, layout: "plain" as const })),
  ];
}

function counterTensors(prefix: string, counters: BatchCounter[]): [string, HostTensor][] {
  return counters.map((c) => [
    prefix + c.name,
    { dtype: "I64", shape: [], data: BigInt64Array.from([BigInt(c.count)]) },
  ]);
}

/** Every tensor of a branch (online or target), with its checkpoint name. */
function branchEntries(branch: Branch, prefix: string): Entry[] {
  return entriesOf(prefix, branch.parameters(), branch.states());
}

/** Thrown instead of writing a checkpoint that holds NaN or infinite values. */
export class NonFiniteError extends Error {}

async function toHost(gpu: Gpu, entries: Entry[]): Promise<[string, HostTensor][]> {
  const data = await gpu.read(entries.map((e) => e.tensor));
  return entries.map((e, i) => {
    const values = data[i] as Float32Array;
    const bad = values.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      throw new NonFiniteError(
        `${e.name}[${bad}] is ${values[bad]}; the checkpoint was not written`,
      );
    }
    const converted = e.layout === "hwio"
      ? hwioToOihw(values, e.tensor.shape)
      : { data: values, shape: e.tensor.shape };
    return [e.name, { dtype: "F32", shape: converted.shape, data: converted.data }];
  });
}

/** Position in training and anything else the caller wants restored (JSON-serialisable). */
export type CheckpointMetadata = Record<string, unknown>;

/** Write the whole training state atomically; refuses (NonFiniteError) to save NaN or Inf. */
export async function saveCheckpoint(
  path: string,
  model: SslModel,
  metadata: CheckpointMetadata,
): Promise<void> {
  const gpu = model.gpu;
  const online = branchEntries(model.online, "");
  const target = branchEntries(model.target, "target.");
  const velocity = model.online.parameters().map((p, i) => ({
    name: `optimizer.velocity.${p.name}`,
    tensor: model.velocity[i],
    layout: p.layout,
  }));
  const tensors = new Map<string, HostTensor>([
    ...await toHost(gpu, [...online, ...target, ...velocity]),
    ...counterTensors("", model.online.batchCounters()),
    ...counterTensors("target.", model.target.batchCounters()),
  ]);
  const file: SafetensorsFile = {
    tensors,
    metadata: {
      format: CHECKPOINT_FORMAT,
      config: JSON.stringify(model.config),
      state: JSON.stringify(metadata),
    },
  };
  await saveSafetensors(path, file);
}

/** Read a checkpoint's model config and training state without building a model. */
export async function readCheckpoint(path: string): Promise<{
  file: SafetensorsFile;
  config: unknown;
  state: CheckpointMetadata;
}> {
  const file = await loadSafetensors(path);
  if (file.metadata.format !== CHECKPOINT_FORMAT) {
    throw new Error(
      `${path} is not a tritrain checkpoint (format ${file.metadata.format ?? "missing"}, ` +
        `expected ${CHECKPOINT_FORMAT})`,
    );
  }
  return {
    file,
    config: JSON.parse(file.metadata.config),
    state: JSON.parse(file.metadata.state ?? "{}"),
  };
}

/** Upload named tensors from a file into entries; every entry must be present with its shape. */
export function loadEntries(file: SafetensorsFile, entries: Entry[], source: string): void {
  for (const e of entries) {
    const host = file.tensors.get(e.name);
    if (!host || host.dtype !== "F32") {
      throw new Error(`${source}: tensor ${e.name} is missing (was it saved by another model?)`);
    }
    const values = e.layout === "hwio"
      ? oihwToHwio(host.data as Float32Array, host.shape)
      : { data: host.data as Float32Array, shape: host.shape };
    const expected = e.tensor.shape.join("x");
    if (values.shape.join("x") !== expected) {
      throw new Error(
        `${source}: tensor ${e.name} has shape [${values.shape}], the model needs [${e.tensor.shape}]`,
      );
    }
    e.tensor.write(values.data);
  }
}

function loadCounters(file: SafetensorsFile, prefix: string, counters: BatchCounter[]): void {
  for (const c of counters) {
    const host = file.tensors.get(prefix + c.name);
    if (host) c.count = Number((host.data as BigInt64Array)[0]);
  }
}

/** Restore a model (built with the checkpoint's config) and return the training state. */
export async function loadCheckpoint(path: string, model: SslModel): Promise<CheckpointMetadata> {
  const { file, state } = await readCheckpoint(path);
  loadEntries(file, branchEntries(model.online, ""), path);
  loadEntries(file, branchEntries(model.target, "target."), path);
  loadEntries(
    file,
    model.online.parameters().map((p, i) => ({
      name: `optimizer.velocity.${p.name}`,
      tensor: model.velocity[i],
      layout: p.layout,
    })),
    path,
  );
  loadCounters(file, "", model.online.batchCounters());
  loadCounters(file, "target.", model.target.batchCounters());
  return state;
}

/** Load just a backbone's tensors (torchvision names) from a checkpoint. */
export function loadBackboneInto(
  file: SafetensorsFile,
  parameters: Parameter[],
  states: StateTensor[],
  source: string,
): void {
  loadEntries(file, entriesOf("", parameters, states), source);
}
