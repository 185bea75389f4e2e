/**
 * The WebGPU device: adapter and limits, error scopes, batched command encoding, dispatch (with
 * named bindings and dispatch observers), batched readback, and the entry points to tensors and
 * operand textures. Knows nothing about neural networks.
 *
 * Grids larger than 65535 workgroups fold into x and y (`grid1d`); a kernel recovers the linear
 * workgroup index as `wid.y * nwg.x + wid.x` and must bounds-check it.
 */
import { type Kernel, type KernelFile, type KernelOptions, PipelineCache } from "./shader.ts";
import { BufferPool, type DType, shapeSize, Tensor } from "./tensor.ts";
import { type OperandTexture, TexturePool } from "./texture.ts";

/** Options for {@link acquireGpu}. */
export interface AcquireOptions {
  /** Print the adapter name and whether it is a fallback (CPU) adapter. */
  log?: boolean;
  /** Run each dispatch in its own validation error scope, so a bad dispatch throws naming the
   * kernel (slower: one submit per dispatch). Defaults to env `TRITRAIN_VALIDATE=1`. */
  validate?: boolean;
}

/** Make the environment right for WebGPU before the first adapter request. */
function prepareEnvironment(): void {
  try {
    // The Vulkan loader warns without a runtime dir; /tmp is always there.
    if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", "/tmp");
  } catch {
    // No env permission: the warning is harmless.
  }
}

let sharedGpu: Promise<Gpu> | undefined;

/**
 * The process-wide GPU, created on first use with the adapter's own maximum limits.
 * Throws a clear error when no adapter exists.
 */
export function acquireGpu(options: AcquireOptions = {}): Promise<Gpu> {
  if (!sharedGpu) {
    sharedGpu = createGpu(options);
    sharedGpu.catch(() => sharedGpu = undefined);
  } else if (options.log) {
    sharedGpu.then((gpu) => console.log(gpu.describe()));
  }
  return sharedGpu;
}

/** Create a new GPU (most callers want the shared {@link acquireGpu}). */
export async function createGpu(options: AcquireOptions = {}): Promise<Gpu> {
  prepareEnvironment();
  if (typeof navigator === "undefined" || !("gpu" in navigator)) {
    throw new Error(
      "WebGPU is not available in this Deno: run with --unstable-webgpu " +
        '(deno.json has "unstable": ["webgpu"], so use `deno task ...`)',
    );
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new Error(
      "no WebGPU adapter: install a GPU driver, or `apt-get install mesa-vulkan-drivers` " +
        "(and set DENO_WEBGPU_BACKEND=vulkan) for the CPU adapter",
    );
  }
  const requiredLimits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) {
    const value = (adapter.limits as unknown as Record<string, number>)[name];
    if (typeof value === "number") requiredLimits[name] = value;
  }
  const wanted: GPUFeatureName[] = ["timestamp-query", "shader-f16"];
  const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  const validate = options.validate ?? readEnv("TRITRAIN_VALIDATE") === "1";
  const info = adapter.info;
  const plan = parsePlanKind(readEnv(KERNEL_PLAN_ENV), KERNEL_PLAN_ENV) ?? "auto";
  const gpu = new Gpu(device, {
    name: info.description || info.device || info.vendor || "unknown adapter",
    isFallback: (info as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter ??
      (adapter as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false,
    validate,
    settings: { ...DEFAULT_KERNEL_SETTINGS, plan },
  });
  if (options.log) console.log(gpu.describe());
  return gpu;
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

const LIMIT_NAMES = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxUniformBufferBindingSize",
  "maxBindGroups",
  "maxBindingsPerBindGroup",
  "maxUniformBuffersPerShaderStage",
  // The smallest alignment the adapter allows (lavapipe 32, the default 256): views bound at an
  // offset (each view's rows of a stacked batch) need it.
  "minStorageBufferOffsetAlignment",
];

/** Anything that can be bound as a storage buffer. */
export type Bindable = Tensor | GPUBuffer;

/** What a named binding may hold: a tensor, a whole buffer, or a texture view. */
export type BindingResource = Bindable | GPUTextureView;

/** One dispatch: what to bind and how many workgroups. */
export interface DispatchArgs<Name extends string = string> {
  /** Small parameters bound as a uniform at binding 0 (u32/i32/f32 packed by the wrapper). */
  uniforms?: ArrayBuffer | ArrayBufferView;
  /**
   * Resources by the binding names of the kernel's file ({@link KernelFile}); a name left out
   * (or null) stays unbound, for entry points of a shared file that do not touch every
   * buffer. A texture view binds as a texture resource (e.g. a read-only storage texture from
   * {@link Gpu.operandTexture}).
   */
  storage: Partial<Record<Name, BindingResource | null | undefined>>;
  /** Workgroup counts (x, y, z). */
  workgroups: [number, number?, number?];
}

/** What a dispatch observer sees of one dispatch, just before its compute pass is encoded. */
export interface DispatchEvent {
  kernel: Kernel;
  args: DispatchArgs;
  /** The pass about to be encoded; an observer may set `timestampWrites` on it. */
  pass: GPUComputePassDescriptor;
}

/** Called for every encoded dispatch (see {@link Gpu.observeDispatches}). */
export type DispatchObserver = (event: DispatchEvent) => void;

/** Where a GEMM kernel reads its operands: "auto" picks textures on fallback (CPU) adapters. */
export type OperandSource = "auto" | "texture" | "buffer";

/** How conv2d's GEMM tiles get their operands: "auto" stages them on GPUs, not on CPU adapters. */
export type TileStaging = "auto" | "workgroup" | "direct";

/**
 * Which kernel plans (tile shapes, operand sources, staging; kernels/plan.ts) a device runs:
 * "auto" picks by adapter (CPU plans on a fallback adapter such as lavapipe, GPU plans
 * otherwise); "gpu" and "cpu" force one, so both stay tested on one machine.
 */
export const PLAN_KINDS = ["auto", "gpu", "cpu"] as const;
export type PlanKind = (typeof PLAN_KINDS)[number];

/** The environment variable that sets {@link KernelSettings.plan} for every new device. */
export const KERNEL_PLAN_ENV = "TRITRAIN_KERNEL_PLAN";

/** The plans a device runs: the forced kind, or by adapter under "auto". */
export function resolvePlanKind(plan: PlanKind, isFallback: boolean): "gpu" | "cpu" {
  return plan === "auto" ? (isFallback ? "cpu" : "gpu") : plan;
}

/**
 * A plan kind named on the command line or in {@link KERNEL_PLAN_ENV} (undefined when unset or
 * empty); throws naming `source` and the choices otherwise.
 */
export function parsePlanKind(value: string | undefined, source: string): PlanKind | undefined {
  if (value === undefined || value === "") return undefined;
  if (!(PLAN_KINDS as readonly string[]).includes(value)) {
    throw new Error(
      `${source} must be one of ${PLAN_KINDS.join(", ")}; got ${JSON.stringify(value)}`,
    );
  }
  return value as PlanKind;
}

/**
 * Per-device choices the kernel wrappers read (tests and benchmarks change them on a device;
 * "auto" picks by adapter, the default). Operands too big for a texture always use buffers.
 */
export interface KernelSettings {
  /** Which plans the kernels follow; the other settings' "auto" follows the resolved kind. */
  plan: PlanKind;
  /** Where matmul reads A and B: textures are faster on CPU adapters such as lavapipe, which
   * load a texel per lane far faster than a storage-buffer element. */
  matmulOperands: OperandSource;
  /** Where conv2d's GEMMs read their operands (as for matmul). */
  conv2dOperands: OperandSource;
  /** "workgroup" stages A and B tiles in workgroup memory (the GPU path); "direct" has every
   * invocation load its own blocks (faster on CPU adapters, where workgroup memory costs as much
   * to read as global memory). */
  conv2dStaging: TileStaging;
}

/** Every setting "auto". */
export const DEFAULT_KERNEL_SETTINGS: Readonly<KernelSettings> = {
  plan: "auto",
  matmulOperands: "auto",
  conv2dOperands: "auto",
  conv2dStaging: "auto",
};

const UNIFORM_SLOT_BYTES = 256;
const UNIFORM_SLOTS = 1024;

/** The device plus everything needed to run kernels on it. */
export class Gpu {
  readonly device: GPUDevice;
  readonly adapterName: string;
  readonly isFallback: boolean;
  readonly validate: boolean;
  readonly limits: GPUSupportedLimits;
  readonly pool: BufferPool;
  readonly hasTimestamps: boolean;
  /** Dispatches encoded since the process started (for profiling and tests). */
  dispatchCount = 0;
  /** The kernel wrappers' per-device choices (defaults: {@link DEFAULT_KERNEL_SETTINGS}). */
  settings: KernelSettings;

  private pipelines: PipelineCache;
  private observers: DispatchObserver[] = [];
  private textures: TexturePool;
  private encoder: GPUCommandEncoder | undefined;
  /** The compute pass consecutive dispatches share (see passFor); ended by any other command. */
  private openPass: GPUComputePassEncoder | undefined;
  private encodedSinceFlush = 0;
  private toDestroyAfterSubmit: GPUBuffer[] = [];
  private uniformRing: GPUBuffer;
  private uniformStaging: Uint8Array<ArrayBuffer>;
  private uniformSlotsUsed = 0;
  private uniformStride: number;
  private pendingChecks: Promise<void>[] = [];
  private fatal: string | undefined;

  constructor(
    device: GPUDevice,
    opts: { name: string; isFallback: boolean; validate: boolean; settings?: KernelSettings },
  ) {
    this.device = device;
    this.adapterName = opts.name;
    this.isFallback = opts.isFallback;
    this.validate = opts.validate;
    this.limits = device.limits;
    this.hasTimestamps = device.features.has("timestamp-query");
    this.pool = new BufferPool(device);
    this.textures = new TexturePool(device);
    this.settings = { ...(opts.settings ?? DEFAULT_KERNEL_SETTINGS) };
    this.pipelines = new PipelineCache(device, (what, compile) => {
      if (this.validate) this.device.pushErrorScope("validation");
      compile();
      if (this.validate) this.checkScope(what);
    });
    this.uniformStride = Math.max(
      UNIFORM_SLOT_BYTES,
      device.limits.minUniformBufferOffsetAlignment,
    );
    this.uniformRing = device.createBuffer({
      label: "uniform-ring",
      size: this.uniformStride * UNIFORM_SLOTS,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.uniformStaging = new Uint8Array(this.uniformStride * UNIFORM_SLOTS);
    device.lost.then((info) => {
      if (info.reason === "destroyed") return;
      this.fatal = `WebGPU device lost (${info.reason}): ${info.message}. ` +
        "The driver reset the GPU, often after a kernel ran too long or memory ran out; " +
        "restart, and lower the batch size if it happens again";
      console.error(this.fatal);
    });
    device.addEventListener("uncapturederror", (event) => {
      const message = (event as GPUUncapturedErrorEvent).error.message;
      this.fatal ??= `WebGPU error: ${message}`;
    });
  }

  /** The kernel plans this device runs now ({@link KernelSettings.plan} resolved). */
  get planKind(): "gpu" | "cpu" {
    return resolvePlanKind(this.settings.plan, this.isFallback);
  }

  /** One line naming the adapter and the kernel plans it runs, e.g. for logs. */
  describe(): string {
    return `adapter: ${this.adapterName}${this.isFallback ? " (fallback CPU adapter)" : ""}; ` +
      `kernel plans: ${this.planKind}${this.settings.plan === "auto" ? " (auto)" : " (forced)"}`;
  }

  /** The maximum bytes one storage binding may cover on this device. */
  get maxBindingBytes(): number {
    return this.limits.maxStorageBufferBindingSize;
  }

  /** Compile (once) a kernel from `kernels/<file>.wgsl`, with its file's binding names. */
  kernel<Name extends string>(file: KernelFile<Name>, options: KernelOptions = {}): Kernel<Name> {
    return this.pipelines.get(file, options);
  }

  /**
   * Call `observer` for every dispatch encoded from now on, just before its compute pass (the
   * profiler adds timestamp writes there, or records the dispatch). Returns the unsubscribe.
   */
  observeDispatches(observer: DispatchObserver): () => void {
    this.observers = [...this.observers, observer];
    return () => {
      this.observers = this.observers.filter((o) => o !== observer);
    };
  }

  /** How many dispatch observers are subscribed (tests check a profiler leaves none behind). */
  get dispatchObserverCount(): number {
    return this.observers.length;
  }

  /** Encode one dispatch of a kernel (submitted at the next flush or read). */
  dispatch<Name extends string>(kernel: Kernel<Name>, args: DispatchArgs<NoInfer<Name>>): void {
    this.throwIfFatal();
    const [x, y = 1, z = 1] = args.workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    const maxDim = this.limits.maxComputeWorkgroupsPerDimension;
    if (x > maxDim || y > maxDim || z > maxDim) {
      throw new Error(
        `kernel ${kernel.name}: grid ${x}x${y}x${z} exceeds ${maxDim} workgroups per dimension`,
      );
    }
    if (this.validate) this.device.pushErrorScope("validation");
    const entries: GPUBindGroupEntry[] = [];
    if (args.uniforms) {
      if (this.uniformSlotsUsed === UNIFORM_SLOTS) this.flush();
      const bytes = args.uniforms instanceof ArrayBuffer
        ? new Uint8Array(args.uniforms)
        : new Uint8Array(args.uniforms.buffer, args.uniforms.byteOffset, args.uniforms.byteLength);
      if (bytes.byteLength > this.uniformStride) {
        throw new Error(`kernel ${kernel.name}: uniforms over ${this.uniformStride} bytes`);
      }
      const offset = this.uniformSlotsUsed * this.uniformStride;
      this.uniformStaging.set(bytes, offset);
      this.uniformSlotsUsed++;
      const size = Math.max(16, Math.ceil(bytes.byteLength / 16) * 16);
      entries.push({ binding: 0, resource: { buffer: this.uniformRing, offset, size } });
    }
    const bindings: readonly (string | null)[] = kernel.bindings;
    const storage: Partial<Record<string, BindingResource | null | undefined>> = args.storage;
    for (const name in storage) {
      if (!bindings.includes(name)) {
        throw new Error(
          `kernel ${kernel.name}: no binding named "${name}" (bindings: ${
            bindings.filter((b) => b !== null).join(", ")
          })`,
        );
      }
    }
    bindings.forEach((name, i) => {
      const b = name === null ? undefined : storage[name];
      if (b === undefined || b === null) return;
      if (b instanceof GPUTextureView) {
        entries.push({ binding: i + 1, resource: b });
      } else if (b instanceof Tensor) {
        entries.push({
          binding: i + 1,
          resource: { buffer: b.buffer, offset: b.byteOffset, size: b.bindBytes },
        });
      } else {
        entries.push({ binding: i + 1, resource: { buffer: b } });
      }
    });
    const bindGroup = this.device.createBindGroup({
      label: kernel.name,
      layout: kernel.pipeline.getBindGroupLayout(0),
      entries,
    });
    const pass = this.passFor(kernel, args as DispatchArgs);
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    if (pass !== this.openPass) pass.end();
    this.dispatchCount++;
    this.encodedSinceFlush++;
    if (this.validate) {
      this.flush();
      this.checkScope(`kernel ${kernel.name}`);
    } else if (this.encodedSinceFlush >= 256) {
      this.flush();
    }
  }

  /**
   * The compute pass of a dispatch. Consecutive dispatches share one open pass (each dispatch
   * still sees the writes of the ones before it): on lavapipe a pass of its own cost ~12 us more
   * per dispatch. Observers (the profiler) get a pass per dispatch, whose descriptor they may
   * give timestamp writes.
   */
  private passFor(kernel: Kernel, args: DispatchArgs): GPUComputePassEncoder {
    if (this.observers.length === 0) {
      this.openPass ??= this.encoderWithoutPass().beginComputePass();
      return this.openPass;
    }
    const passDescriptor: GPUComputePassDescriptor = { label: kernel.name };
    for (const observe of this.observers) observe({ kernel, args, pass: passDescriptor });
    return this.currentEncoder().beginComputePass(passDescriptor);
  }

  /** The shared command encoder for non-dispatch commands (copies, clears). */
  currentEncoder(): GPUCommandEncoder {
    // A command outside a compute pass ends the open one (it stays ordered after its dispatches).
    this.openPass?.end();
    this.openPass = undefined;
    return this.encoderWithoutPass();
  }

  private encoderWithoutPass(): GPUCommandEncoder {
    this.encoder ??= this.device.createCommandEncoder();
    return this.encoder;
  }

  /** Submit everything encoded so far. */
  flush(): void {
    if (!this.encoder && this.uniformSlotsUsed === 0) return;
    if (this.uniformSlotsUsed > 0) {
      this.device.queue.writeBuffer(
        this.uniformRing,
        0,
        this.uniformStaging,
        0,
        this.uniformSlotsUsed * this.uniformStride,
      );
      this.uniformSlotsUsed = 0;
    }
    if (this.encoder) {
      this.openPass?.end();
      this.openPass = undefined;
      this.device.queue.submit([this.encoder.finish()]);
      this.encoder = undefined;
    }
    this.encodedSinceFlush = 0;
    for (const b of this.toDestroyAfterSubmit) b.destroy();
    this.toDestroyAfterSubmit = [];
  }

  /** Submit and wait until the GPU is idle; surfaces validation errors. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.settleChecks();
  }

  /** Upload bytes into a buffer, ordered after everything already encoded. */
  writeBuffer(buffer: GPUBuffer, byteOffset: number, data: ArrayBufferView): void {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const padded = Math.ceil(bytes.byteLength / 4) * 4;
    if (padded === 0) return;
    const staging = this.device.createBuffer({
      size: padded,
      usage: GPUBufferUsage.COPY_SRC,
      mappedAtCreation: true,
    });
    new Uint8Array(staging.getMappedRange()).set(bytes);
    staging.unmap();
    this.currentEncoder().copyBufferToBuffer(staging, 0, buffer, byteOffset, padded);
    this.toDestroyAfterSubmit.push(staging);
  }

  /** Read several tensors back with a single map (one ~10 ms round trip on lavapipe). */
  async read(tensors: Tensor[]): Promise<(Float32Array | Uint32Array)[]> {
    this.throwIfFatal();
    let total = 0;
    const offsets = tensors.map((t) => {
      const o = total;
      total += Math.ceil(t.byteLength / 4) * 4;
      return o;
    });
    const staging = this.device.createBuffer({
      size: Math.max(4, total),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = this.currentEncoder();
    tensors.forEach((t, i) => {
      if (t.byteLength > 0) {
        encoder.copyBufferToBuffer(t.buffer, t.byteOffset, staging, offsets[i], t.byteLength);
      }
    });
    this.flush();
    await staging.mapAsync(GPUMapMode.READ);
    const all = staging.getMappedRange().slice(0);
    staging.unmap();
    staging.destroy();
    await this.settleChecks();
    this.throwIfFatal();
    return tensors.map((t, i) =>
      t.dtype === "u32"
        ? new Uint32Array(all, offsets[i], t.size)
        : new Float32Array(all, offsets[i], t.size)
    );
  }

  /** A new uninitialised tensor from the pool. */
  empty(shape: readonly number[], dtype: DType = "f32", label?: string): Tensor {
    const size = shapeSize(shape);
    const bytes = size * 4;
    if (bytes > this.limits.maxStorageBufferBindingSize) {
      throw new Error(
        `tensor${label ? ` ${label}` : ""} of shape [${shape}] needs ${mib(bytes)} MiB, over ` +
          `this adapter's ${mib(this.limits.maxStorageBufferBindingSize)} MiB per storage ` +
          "binding: lower the batch size (use gradient accumulation for a large effective batch)",
      );
    }
    return new Tensor(this, [...shape], dtype, this.pool.acquire(bytes), 0, true);
  }

  /** A new tensor filled with zeros. */
  zeros(shape: readonly number[], dtype: DType = "f32", label?: string): Tensor {
    const t = this.empty(shape, dtype, label);
    if (t.byteLength > 0) this.currentEncoder().clearBuffer(t.buffer, 0, t.paddedBytes);
    return t;
  }

  /** A new tensor holding a copy of `data`. */
  upload(data: ArrayLike<number>, shape: readonly number[], dtype: DType = "f32"): Tensor {
    const size = shapeSize(shape);
    if (data.length !== size) {
      throw new Error(`upload: ${data.length} values do not fill shape [${shape}] (${size})`);
    }
    const t = this.empty(shape, dtype);
    t.write(data);
    return t;
  }

  /** Whether {@link operandTexture} can take `t`: f32, 16-byte aligned, within the size limit. */
  fitsOperandTexture(t: Tensor): boolean {
    return this.textures.fits(t);
  }

  /**
   * Copy a f32 tensor into a pooled `rgba32float` texture, ordered after work already encoded
   * (see {@link TexturePool.acquire}); release once the reading dispatch is encoded.
   */
  operandTexture(t: Tensor): OperandTexture {
    return this.textures.acquire(this.currentEncoder(), t);
  }

  /** A 1x1 `rgba32float` storage texture to bind where a kernel's texture operand is unused. */
  placeholderTexture(): GPUTextureView {
    return this.textures.placeholder();
  }

  /** Destroy the device (tests and tools that exit). */
  destroy(): void {
    this.flush();
    this.device.destroy();
  }

  private checkScope(what: string): void {
    const popped = this.device.popErrorScope().then((error) => {
      if (error) throw new Error(`${what}: ${error.message}`);
    });
    // Attach a handler now so a rejection never goes unhandled; it is rethrown by settleChecks.
    popped.catch(() => {});
    this.pendingChecks.push(popped);
  }

  private async settleChecks(): Promise<void> {
    const checks = this.pendingChecks;
    this.pendingChecks = [];
    await Promise.all(checks);
  }

  private throwIfFatal(): void {
    if (this.fatal) throw new Error(this.fatal);
  }
}

/** Fold a count of workgroups into an x-y grid that respects the per-dimension limit. */
export function grid1d(workgroups: number, maxPerDim = 65535): [number, number] {
  if (workgroups <= maxPerDim) return [Math.max(workgroups, 0), 1];
  const y = Math.ceil(workgroups / maxPerDim);
  return [Math.ceil(workgroups / y), y];
}

/** Integer division rounding up. */
export function ceilDiv(a: number, b: number): number {
  return Math.floor((a + b - 1) / b);
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}

/** Pack uniforms: each entry is [type, value]; all scalars take 4 bytes, in order. */
export function packUniforms(fields: (["u32" | "i32" | "f32", number])[]): ArrayBuffer {
  const buffer = new ArrayBuffer(Math.max(16, Math.ceil(fields.length / 4) * 16));
  const view = new DataView(buffer);
  fields.forEach(([type, value], i) => {
    if (type === "u32") view.setUint32(i * 4, value, true);
    else if (type === "i32") view.setInt32(i * 4, value, true);
    else view.setFloat32(i * 4, value, true);
  });
  return buffer;
}
