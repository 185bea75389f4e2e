/**
 * Data-parallel training over a {@link Collective} (MPI ranks, one WebGPU device each): rank 0's
 * initial weights go to every rank, and after each step's backward the gradients are averaged
 * over the ranks, so LARS and EMA then run identically everywhere and the ranks' models stay equal.
 *
 * Host round trip per step: one readback per bucket (each readback costs a fixed ~11 ms on
 * lavapipe on top of the copy, so gradients, running statistics and the loss slots travel together
 * in as few buckets as the adapter's buffer limit allows), one all-reduce per bucket, one upload
 * per bucket. Nothing overlaps the backward: the round trip starts once the step's last gradient
 * is written.
 *
 * BatchNorm: there is no SyncBN. Each rank normalises with the statistics of its own micro-batch
 * (as one process with `--accum N` does for each of its micro-batches), so each rank's running
 * statistics drift towards its own data. Combining them after every step keeps the ranks' models
 * (and checkpoints) identical: by default their mean; with `stateDecayPerRank` exactly the
 * running statistics one process would reach by applying the ranks' micro-batches in rank order.
 */
import type { Gpu, Tensor } from "../runtime/gpu.ts";
import type { Collective } from "../runtime/mpi.ts";
import type { Parameter, StateTensor } from "./layers.ts";

/** Where the time of one {@link GradientSync.allReduce} went, in milliseconds. */
export interface SyncTimings {
  /** Readbacks to the host, including GPU work still queued before them (the step's backward,
   * unless the caller waited for it). */
  readMs: number;
  /** All-reduce over the ranks and the averaging on the host. */
  reduceMs: number;
  /** Encoding the uploads (the copies themselves run on the GPU before the next kernels). */
  uploadMs: number;
}

/** What {@link GradientSync.allReduce} returns. */
export interface SyncResult extends SyncTimings {
  /** The extra tensors' values averaged over the ranks (also written back into them). */
  extras: Float32Array[];
}

/** Options for {@link GradientSync}. */
export interface GradientSyncOptions {
  /** Largest readback/upload bucket in bytes (default: the adapter's buffer limit, at most
   * 1 GiB). */
  maxBucketBytes?: number;
  /**
   * Combine running statistics as one process would see the ranks' micro-batches in rank order:
   * the factor each running statistic decays by during one rank's share of a step,
   * `(1 - momentum) ** (BatchNorm forwards per rank per step)`, e.g. `0.9 ** (2 * accum)` for the
   * SSL step (two online views per micro-batch). Omitted: the plain mean over the ranks.
   */
  stateDecayPerRank?: number;
}

/** One tensor in the flat host layout, with what happens to it after the reduction. */
interface Slot {
  tensor: Tensor;
  kind: "parameter" | "state" | "extra";
  /** Index among the states (for the sequential combination) or the extras. */
  index: number;
}

/**
 * Staging buffers and the host copy of one bucket, kept from step to step: fresh buffers of
 * ResNet-50's 134 MiB every step cost their first-touch page faults three times over (about 1.3 s
 * each on the shared 2-core test VM; tens of milliseconds on an idle machine).
 */
interface BucketBuffers {
  floats: number;
  readStaging: GPUBuffer;
  writeStaging: GPUBuffer;
  /** Resolves once writeStaging is mapped for writing again (after the last step's copies). */
  writable: Promise<void>;
  host: Float32Array;
}

/**
 * Averages gradients (and combines BatchNorm running statistics) over the ranks of a collective.
 * Every rank must make the same calls in the same order.
 */
export class GradientSync {
  private maxBucketBytes: number;
  /** States as all ranks held them after the last synchronisation (sequential mode). */
  private previousStates: Float32Array[] | undefined;
  /** Per bucket of {@link allReduce}, reused while the buckets keep their sizes. */
  private stepBuffers: BucketBuffers[] = [];

  constructor(
    readonly gpu: Gpu,
    readonly collective: Collective,
    readonly parameters: Parameter[],
    readonly states: StateTensor[],
    private options: GradientSyncOptions = {},
  ) {
    for (const t of [...parameters.map((p) => p.value), ...states.map((s) => s.value)]) {
      if (t.dtype !== "f32") throw new Error(`GradientSync: tensor [${t.shape}] is not f32`);
    }
    this.maxBucketBytes = options.maxBucketBytes ??
      Math.min(gpu.limits.maxBufferSize, 1 << 30);
    const decay = options.stateDecayPerRank;
    if (decay !== undefined && !(decay >= 0 && decay < 1)) {
      throw new Error(`GradientSync: stateDecayPerRank ${decay} must be in [0, 1)`);
    }
  }

  /**
   * Give every rank rank 0's parameter values and running statistics, and the contents of
   * `extras` (e.g. the optimizer's velocity and the target network when resuming from a checkpoint
   * only rank 0 can read). Call once after building or loading the model, before the first step;
   * without the target among `extras`, copy the online network to the target again afterwards.
   */
  async broadcastInitial(extras: Tensor[] = []): Promise<void> {
    const slots: Slot[] = [
      ...this.parameters.map((p, index) => ({
        tensor: p.value,
        kind: "parameter" as const,
        index,
      })),
      ...this.states.map((s, index) => ({ tensor: s.value, kind: "state" as const, index })),
      ...extras.map((tensor, index) => ({ tensor, kind: "extra" as const, index })),
    ];
    const isRoot = this.collective.rank === 0;
    const previous: Float32Array[] = [];
    for (const bucket of this.buckets(slots)) {
      const flat = isRoot ? await this.readBucket(bucket) : new Float32Array(floatsIn(bucket));
      await this.collective.broadcast(flat, 0);
      if (!isRoot) this.uploadBucket(bucket, flat);
      let offset = 0;
      for (const slot of bucket) {
        if (slot.kind === "state") {
          previous[slot.index] = flat.slice(offset, offset + slot.tensor.size);
        }
        offset += slot.tensor.size;
      }
    }
    this.previousStates = previous;
  }

  /**
   * After the step's backward: every parameter gradient becomes the mean over the ranks, the
   * running statistics are combined (see the file comment), and each `extras` tensor (e.g. the
   * step's loss slots) becomes its element-wise mean over the ranks.
   */
  async allReduce(extras: Tensor[] = []): Promise<SyncResult> {
    const decay = this.options.stateDecayPerRank;
    if (decay !== undefined && !this.previousStates) {
      throw new Error("GradientSync: call broadcastInitial() before the first allReduce()");
    }
    const slots: Slot[] = [
      ...this.parameters.map((p, index) => ({ tensor: p.grad, kind: "parameter" as const, index })),
      ...this.states.map((s, index) => ({ tensor: s.value, kind: "state" as const, index })),
      ...extras.map((tensor, index) => ({ tensor, kind: "extra" as const, index })),
    ];
    const buckets = this.buckets(slots);
    const buffers = buckets.map((bucket, b) => this.bucketBuffers(b, floatsIn(bucket)));
    const t0 = performance.now();
    // Every bucket's copies in one submission, then one wait for all of them.
    const encoder = this.gpu.currentEncoder();
    buckets.forEach((bucket, b) => {
      let offset = 0;
      for (const { tensor } of bucket) {
        encoder.copyBufferToBuffer(
          tensor.buffer,
          tensor.byteOffset,
          buffers[b].readStaging,
          offset * 4,
          tensor.byteLength,
        );
        offset += tensor.size;
      }
    });
    this.gpu.flush();
    await Promise.all(buffers.map((s) => s.readStaging.mapAsync(GPUMapMode.READ, 0, s.floats * 4)));
    for (const s of buffers) {
      s.host.set(new Float32Array(s.readStaging.getMappedRange(0, s.floats * 4)));
      s.readStaging.unmap();
    }
    const flats = buffers.map((s) => s.host);
    const t1 = performance.now();
    const { rank, size } = this.collective;
    const meanScale = 1 / size;
    const extraValues: Float32Array[] = [];
    for (let b = 0; b < buckets.length; b++) {
      const flat = flats[b];
      if (decay !== undefined) {
        this.forEachState(buckets[b], flat, (values, previous) => {
          // This rank's share of the step, weighted as if the later ranks' shares followed it.
          const weight = decay ** (size - 1 - rank);
          for (let i = 0; i < values.length; i++) {
            values[i] = weight * (values[i] - decay * previous[i]);
          }
        });
      }
      await this.collective.allReduceSum(flat);
      let offset = 0;
      for (const slot of buckets[b]) {
        const values = flat.subarray(offset, offset + slot.tensor.size);
        offset += slot.tensor.size;
        if (slot.kind === "state" && decay !== undefined) continue;
        for (let i = 0; i < values.length; i++) values[i] *= meanScale;
        if (slot.kind === "extra") extraValues[slot.index] = values.slice();
      }
      if (decay !== undefined) {
        this.forEachState(buckets[b], flat, (values, previous) => {
          const start = decay ** size;
          for (let i = 0; i < values.length; i++) values[i] += start * previous[i];
          previous.set(values);
        });
      }
    }
    const t2 = performance.now();
    for (let b = 0; b < buckets.length; b++) {
      const s = buffers[b];
      await s.writable;
      new Float32Array(s.writeStaging.getMappedRange(0, s.floats * 4)).set(s.host);
      s.writeStaging.unmap();
      this.encodeScatter(buckets[b], s.writeStaging);
    }
    // Submit the copies, then map the staging buffers for the next step once they ran.
    this.gpu.flush();
    for (const s of buffers) {
      s.writable = s.writeStaging.mapAsync(GPUMapMode.WRITE, 0, s.floats * 4);
      s.writable.catch(() => {}); // a failure surfaces when the next step awaits it
    }
    const t3 = performance.now();
    return { readMs: t1 - t0, reduceMs: t2 - t1, uploadMs: t3 - t2, extras: extraValues };
  }

  /** Total floats one {@link allReduce} moves per rank without extras (gradients and states). */
  get floatsPerStep(): number {
    return [...this.parameters.map((p) => p.grad), ...this.states.map((s) => s.value)]
      .reduce((n, t) => n + t.size, 0);
  }

  /** Slots packed in order into buckets of at most maxBucketBytes (a larger tensor goes alone). */
  private buckets(slots: Slot[]): Slot[][] {
    const buckets: Slot[][] = [];
    let current: Slot[] = [];
    let bytes = 0;
    for (const slot of slots) {
      if (slot.tensor.size === 0) continue;
      if (current.length > 0 && bytes + slot.tensor.byteLength > this.maxBucketBytes) {
        buckets.push(current);
        current = [];
        bytes = 0;
      }
      current.push(slot);
      bytes += slot.tensor.byteLength;
    }
    if (current.length > 0) buckets.push(current);
    return buckets;
  }

  /** One readback of a bucket's tensors, as one contiguous array in slot order. */
  private async readBucket(bucket: Slot[]): Promise<Float32Array> {
    const views = await this.gpu.read(bucket.map((s) => s.tensor));
    // gpu.read packs the tensors back to back (f32: no padding) into one buffer.
    return new Float32Array(views[0].buffer, 0, floatsIn(bucket));
  }

  /** One-off upload (broadcastInitial): a staging buffer for the bucket, then its copies. */
  private uploadBucket(bucket: Slot[], flat: Float32Array): void {
    // A plain COPY_SRC buffer (not a pooled tensor), so a bucket may exceed the storage binding
    // limit (128 MiB on lavapipe; ResNet-50's online gradients are 134 MiB).
    const staging = this.gpu.device.createBuffer({
      size: flat.byteLength,
      usage: GPUBufferUsage.COPY_SRC,
      mappedAtCreation: true,
    });
    new Float32Array(staging.getMappedRange()).set(flat);
    staging.unmap();
    this.encodeScatter(bucket, staging);
    // Submit the copies; the buffer is freed once they ran.
    this.gpu.flush();
    staging.destroy();
  }

  /** Copy a staging buffer holding the bucket back to back into each of its tensors. */
  private encodeScatter(bucket: Slot[], staging: GPUBuffer): void {
    const encoder = this.gpu.currentEncoder();
    let offset = 0;
    for (const { tensor } of bucket) {
      encoder.copyBufferToBuffer(
        staging,
        offset * 4,
        tensor.buffer,
        tensor.byteOffset,
        tensor.byteLength,
      );
      offset += tensor.size;
    }
  }

  /** Bucket b's reusable buffers, (re)made when its size changed. */
  private bucketBuffers(b: number, floats: number): BucketBuffers {
    const existing = this.stepBuffers[b];
    if (existing?.floats === floats) return existing;
    if (existing) destroyBuffers(existing);
    const device = this.gpu.device;
    const created: BucketBuffers = {
      floats,
      readStaging: device.createBuffer({
        size: floats * 4,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      }),
      writeStaging: device.createBuffer({
        size: floats * 4,
        usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC,
        mappedAtCreation: true,
      }),
      writable: Promise.resolve(),
      host: new Float32Array(floats),
    };
    this.stepBuffers[b] = created;
    return created;
  }

  /** Free the staging buffers (the GradientSync stays usable: they are made again). */
  destroy(): void {
    for (const buffers of this.stepBuffers) destroyBuffers(buffers);
    this.stepBuffers = [];
  }

  private forEachState(
    bucket: Slot[],
    flat: Float32Array,
    visit: (values: Float32Array, previous: Float32Array) => void,
  ): void {
    let offset = 0;
    for (const slot of bucket) {
      if (slot.kind === "state") {
        visit(flat.subarray(offset, offset + slot.tensor.size), this.previousStates![slot.index]);
      }
      offset += slot.tensor.size;
    }
  }
}

function destroyBuffers(buffers: BucketBuffers): void {
  buffers.readStaging.destroy();
  buffers.writeStaging.destroy();
}

function floatsIn(bucket: Slot[]): number {
  return bucket.reduce((n, s) => n + s.tensor.size, 0);
}

/**
 * Refuse to start when the ranks' configurations differ: rank 0's JSON is broadcast and every rank
 * compares its own. Throws on every rank (so none waits forever in a later collective); a rank
 * whose config differs names the first differing field.
 */
export async function assertSameConfig(collective: Collective, configJson: string): Promise<void> {
  const rootJson = await broadcastText(collective, configJson);
  const difference = rootJson === configJson ? undefined : firstDifference(rootJson, configJson);
  const differs = new Float32Array(collective.size);
  differs[collective.rank] = difference === undefined ? 0 : 1;
  await collective.allReduceSum(differs);
  const differing = [...differs.keys()].filter((r) => differs[r] !== 0);
  if (differing.length === 0) return;
  // Every rank (rank 0 too, whose error may be the one printed) names the first differing field.
  const first = differing[0];
  const own = difference?.replace("this rank", `rank ${collective.rank}`) ?? "";
  const field = await broadcastText(collective, own, first);
  throw new Error(
    `config of rank ${first} differs from rank 0's at ${field}` +
      (differing.length > 1 ? ` (ranks ${differing.join(", ")} differ)` : "") +
      ": start every rank with the same flags and files",
  );
}

/**
 * Rank 0's `text` on every rank (other ranks' `text` is ignored), e.g. the resume metadata that only
 * rank 0's run directory holds.
 */
export async function broadcastText(
  collective: Collective,
  text: string,
  root = 0,
): Promise<string> {
  const isRoot = collective.rank === root;
  const own = new TextEncoder().encode(isRoot ? text : "");
  const length = new Uint32Array([own.length]);
  await collective.broadcast(new Uint8Array(length.buffer), root);
  const bytes = isRoot ? own : new Uint8Array(length[0]);
  await collective.broadcast(bytes, root);
  return new TextDecoder().decode(bytes);
}

/** The first field where two JSON texts differ, as `path: rank 0 has X, this rank has Y`. */
function firstDifference(rootJson: string, ownJson: string): string {
  let root: unknown;
  let own: unknown;
  try {
    root = JSON.parse(rootJson);
    own = JSON.parse(ownJson);
  } catch {
    let i = 0;
    while (rootJson[i] === ownJson[i]) i++;
    return `character ${i} (not JSON)`;
  }
  return walk(root, own, "") ?? "the JSON text (same values, different formatting)";
}

function walk(root: unknown, own: unknown, path: string): string | undefined {
  const show = (v: unknown) => v === undefined ? "nothing" : JSON.stringify(v);
  const bothObjects = typeof root === "object" && root !== null && typeof own === "object" &&
    own !== null && Array.isArray(root) === Array.isArray(own);
  if (!bothObjects) {
    return Object.is(root, own)
      ? undefined
      : `"${path || "(root)"}": rank 0 has ${show(root)}, this rank has ${show(own)}`;
  }
  const a = root as Record<string, unknown>;
  const b = own as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
  for (const key of keys) {
    const child = Array.isArray(root) ? `${path}[${key}]` : path ? `${path}.${key}` : key;
    const found = walk(a[key], b[key], child);
    if (found) return found;
  }
  return undefined;
}
