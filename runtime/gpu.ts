/**
 * The WebGPU runtime: adapter and device, buffer pool, kernel (pipeline) cache, batched
 * command encoding, dispatch and batched readback. Knows nothing about neural networks.
 *
 * Binding convention shared by every kernel in `kernels/`:
 * - `@group(0) @binding(0)` is a `var<uniform>` of small per-dispatch parameters (when the kernel
 *   takes any); storage buffers follow at bindings 1, 2, ... in the order the wrapper passes them.
 * - Grids larger than 65535 workgroups fold into x and y (`grid1d`); a kernel recovers the linear
 *   workgroup index as `wid.y * nwg.x + wid.x` and must bounds-check it.
 */

/** Element types a tensor may hold. */
export type DType = "f32" | "u32";

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
  const gpu = new Gpu(device, {
    name: info.description || info.device || info.vendor || "unknown adapter",
    isFallback: (info as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter ??
      (adapter as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false,
    validate,
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
];

/** A compiled compute pipeline with the name used in error messages. */
export interface Kernel {
  name: string;
  pipeline: GPUComputePipeline;
}

/** Anything that can be bound as a storage buffer. */
export type Bindable = Tensor | GPUBuffer;

/**
 * Texels per row of an operand texture (see {@link Gpu.operandTexture}): vec4 number i of a tensor
 * sits at texel (i % OPERAND_TEXTURE_WIDTH, i / OPERAND_TEXTURE_WIDTH). A power of two, so kernels
 * address it with a mask and a shift; rows of 64 KiB satisfy copyBufferToTexture's 256-byte rule.
 */
export const OPERAND_TEXTURE_WIDTH = 4096;

/** A tensor's contents in a pooled texture; `release` returns the texture to the pool. */
export interface OperandTexture {
  view: GPUTextureView;
  release(): void;
}

/** One dispatch: what to bind and how many workgroups. */
export interface DispatchArgs {
  /** Small parameters bound as a uniform at binding 0 (u32/i32/f32 packed by the wrapper). */
  uniforms?: ArrayBuffer | ArrayBufferView;
  /** Storage buffers, bound at 1, 2, ... in order; `null` leaves that binding number unused
   * (for entry points of a shared file that do not touch every buffer). A texture view binds as
   * a texture resource (e.g. a read-only storage texture from {@link Gpu.operandTexture}). */
  storage: (Bindable | GPUTextureView | null)[];
  /** Workgroup counts (x, y, z). */
  workgroups: [number, number?, number?];
}

/** Options to specialise a kernel. */
export interface KernelOptions {
  /** Entry point (default `main`). */
  entryPoint?: string;
  /** Values for WGSL `override` declarations. */
  constants?: Record<string, number>;
  /**
   * Textual substitution for things `override` cannot express (workgroup array sizes in old
   * compilers, types): every `{{KEY}}` in the source becomes the value.
   */
  substitute?: Record<string, string | number>;
}

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
  /** Optional hook called for every dispatch (the profiler uses it). */
  onDispatch?: (name: string, pass: GPUComputePassDescriptor) => void;

  private pipelines = new Map<string, Kernel>();
  private freeTextures = new Map<string, GPUTexture[]>();
  private placeholderView: GPUTextureView | undefined;
  private modules = new Map<string, GPUShaderModule>();
  private encoder: GPUCommandEncoder | undefined;
  private encodedSinceFlush = 0;
  private toDestroyAfterSubmit: GPUBuffer[] = [];
  private uniformRing: GPUBuffer;
  private uniformStaging: Uint8Array<ArrayBuffer>;
  private uniformSlotsUsed = 0;
  private uniformStride: number;
  private pendingChecks: Promise<void>[] = [];
  private fatal: string | undefined;

  constructor(device: GPUDevice, opts: { name: string; isFallback: boolean; validate: boolean }) {
    this.device = device;
    this.adapterName = opts.name;
    this.isFallback = opts.isFallback;
    this.validate = opts.validate;
    this.limits = device.limits;
    this.hasTimestamps = device.features.has("timestamp-query");
    this.pool = new BufferPool(device);
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

  /** One line naming the adapter, e.g. for logs. */
  describe(): string {
    return `adapter: ${this.adapterName}${this.isFallback ? " (fallback CPU adapter)" : ""}`;
  }

  /** The maximum bytes one storage binding may cover on this device. */
  get maxBindingBytes(): number {
    return this.limits.maxStorageBufferBindingSize;
  }

  /** Compile (once) a kernel from `kernels/<file>.wgsl`. */
  kernel(file: string, options: KernelOptions = {}): Kernel {
    const entryPoint = options.entryPoint ?? "main";
    const key = `${file}|${entryPoint}|${JSON.stringify(options.constants ?? {})}|${
      JSON.stringify(options.substitute ?? {})
    }`;
    const cached = this.pipelines.get(key);
    if (cached) return cached;
    const source = specialise(loadKernelSource(file), options.substitute ?? {});
    const moduleKey = `${file}|${JSON.stringify(options.substitute ?? {})}`;
    let module = this.modules.get(moduleKey);
    const name = `${file}:${entryPoint}`;
    if (this.validate) this.device.pushErrorScope("validation");
    if (!module) {
      module = this.device.createShaderModule({ label: file, code: source });
      this.modules.set(moduleKey, module);
    }
    const pipeline = this.device.createComputePipeline({
      label: name,
      layout: "auto",
      compute: { module, entryPoint, constants: options.constants },
    });
    if (this.validate) this.checkScope(`compiling kernel ${name}`);
    const kernel = { name, pipeline };
    this.pipelines.set(key, kernel);
    return kernel;
  }

  /** Encode one dispatch of a kernel (submitted at the next flush or read). */
  dispatch(kernel: Kernel, args: DispatchArgs): void {
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
    args.storage.forEach((b, i) => {
      if (b === null) return;
      if (b instanceof GPUTextureView) {
        entries.push({ binding: i + 1, resource: b });
        return;
      }
      const buffer = b instanceof Tensor ? b.buffer : b;
      if (b instanceof Tensor) {
        entries.push({
          binding: i + 1,
          resource: { buffer, offset: b.byteOffset, size: b.bindBytes },
        });
      } else {
        entries.push({ binding: i + 1, resource: { buffer } });
      }
    });
    const bindGroup = this.device.createBindGroup({
      label: kernel.name,
      layout: kernel.pipeline.getBindGroupLayout(0),
      entries,
    });
    const encoder = this.currentEncoder();
    const passDescriptor: GPUComputePassDescriptor = { label: kernel.name };
    this.onDispatch?.(kernel.name, passDescriptor);
    const pass = encoder.beginComputePass(passDescriptor);
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    pass.end();
    this.dispatchCount++;
    this.encodedSinceFlush++;
    if (this.validate) {
      this.flush();
      this.checkScope(`kernel ${kernel.name}`);
    } else if (this.encodedSinceFlush >= 256) {
      this.flush();
    }
  }

  /** The shared command encoder for non-dispatch commands (copies, clears). */
  currentEncoder(): GPUCommandEncoder {
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
    const texels = Math.max(1, Math.ceil(t.size / 4));
    const maxRows = this.limits.maxTextureDimension2D;
    return t.dtype === "f32" && t.byteOffset % 16 === 0 &&
      t.byteOffset + texels * 16 <= t.buffer.size &&
      OPERAND_TEXTURE_WIDTH <= maxRows && texels <= OPERAND_TEXTURE_WIDTH * maxRows;
  }

  /**
   * Copy a f32 tensor into a pooled `rgba32float` texture (STORAGE_BINDING), laid out as its vec4
   * in order, {@link OPERAND_TEXTURE_WIDTH} per row; texels past the end are unspecified. On CPU
   * adapters (lavapipe) a kernel's per-lane texture loads cost about a third of storage-buffer
   * loads. The copy is ordered after work already encoded; release once the reading dispatch is
   * encoded (like tensors, later work sees the texture reused, earlier work its contents).
   */
  operandTexture(t: Tensor): OperandTexture {
    if (!this.fitsOperandTexture(t)) {
      throw new Error(
        `operandTexture: tensor [${t.shape}] (${t.dtype}, byte offset ${t.byteOffset}) does not ` +
          "fit an rgba32float texture (see fitsOperandTexture)",
      );
    }
    const texels = Math.max(1, Math.ceil(t.size / 4));
    const width = OPERAND_TEXTURE_WIDTH;
    const height = Math.ceil(texels / width);
    const key = `${width}x${height}`;
    const texture = this.freeTextures.get(key)?.pop() ?? this.device.createTexture({
      label: `operand-texture-${key}`,
      size: [width, height],
      format: "rgba32float",
      usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_DST,
    });
    const encoder = this.currentEncoder();
    const fullRows = Math.floor(texels / width);
    const rest = texels % width;
    if (fullRows > 0) {
      encoder.copyBufferToTexture(
        { buffer: t.buffer, offset: t.byteOffset, bytesPerRow: width * 16, rowsPerImage: fullRows },
        { texture },
        [width, fullRows],
      );
    }
    if (rest > 0) {
      encoder.copyBufferToTexture(
        { buffer: t.buffer, offset: t.byteOffset + fullRows * width * 16, bytesPerRow: width * 16 },
        { texture, origin: [0, fullRows] },
        [rest, 1],
      );
    }
    let released = false;
    return {
      view: texture.createView(),
      release: () => {
        if (released) return;
        released = true;
        const list = this.freeTextures.get(key) ?? [];
        list.push(texture);
        this.freeTextures.set(key, list);
      },
    };
  }

  /** A 1x1 `rgba32float` storage texture to bind where a kernel's texture operand is unused. */
  placeholderTexture(): GPUTextureView {
    this.placeholderView ??= this.device.createTexture({
      label: "placeholder-texture",
      size: [1, 1],
      format: "rgba32float",
      usage: GPUTextureUsage.STORAGE_BINDING,
    }).createView();
    return this.placeholderView;
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

/** Reuses GPU buffers by exact (16-byte rounded) size; ResNets repeat shapes a lot. */
export class BufferPool {
  private free = new Map<number, GPUBuffer[]>();
  /** Bytes currently allocated on the device by this pool. */
  allocatedBytes = 0;
  constructor(private device: GPUDevice) {}

  static roundBytes(bytes: number): number {
    return Math.max(16, Math.ceil(bytes / 16) * 16);
  }

  acquire(bytes: number): GPUBuffer {
    const size = BufferPool.roundBytes(bytes);
    const list = this.free.get(size);
    if (list && list.length > 0) return list.pop()!;
    this.allocatedBytes += size;
    return this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
  }

  release(buffer: GPUBuffer): void {
    const list = this.free.get(buffer.size) ?? [];
    list.push(buffer);
    this.free.set(buffer.size, list);
  }

  /** Destroy every idle buffer (after a phase whose shapes will not recur). */
  trim(): void {
    for (const list of this.free.values()) {
      for (const b of list) {
        this.allocatedBytes -= b.size;
        b.destroy();
      }
    }
    this.free.clear();
  }
}

/** A typed, shaped view of a GPU buffer. Row-major; activations are NHWC. */
export class Tensor {
  private released = false;
  constructor(
    readonly gpu: Gpu,
    readonly shape: number[],
    readonly dtype: DType,
    readonly buffer: GPUBuffer,
    /** Byte offset of element 0 inside `buffer` (views). */
    readonly byteOffset = 0,
    /** Whether this tensor owns the buffer (and returns it to the pool on release). */
    readonly owner = true,
  ) {}

  /** Number of elements. */
  get size(): number {
    return shapeSize(this.shape);
  }
  get byteLength(): number {
    return this.size * 4;
  }
  /** Bytes reserved in the buffer (rounded up). */
  get paddedBytes(): number {
    return this.buffer.size - this.byteOffset;
  }
  /** Bytes to bind: the whole (padded) buffer, so an empty tensor still binds legally. */
  get bindBytes(): number | undefined {
    return this.byteOffset === 0 && this.owner ? undefined : Math.max(4, this.byteLength);
  }

  /** Same buffer, another shape with the same element count. */
  reshape(shape: readonly number[]): Tensor {
    if (shapeSize(shape) !== this.size) {
      throw new Error(`reshape: [${this.shape}] has ${this.size} elements, not [${shape}]`);
    }
    return new Tensor(this.gpu, [...shape], this.dtype, this.buffer, this.byteOffset, false);
  }

  /** Overwrite the contents (ordered after work already encoded). */
  write(data: ArrayLike<number>): void {
    if (data.length !== this.size) {
      throw new Error(`write: ${data.length} values for tensor of shape [${this.shape}]`);
    }
    const typed = this.dtype === "u32"
      ? (data instanceof Uint32Array ? data : Uint32Array.from(data))
      : (data instanceof Float32Array ? data : Float32Array.from(data));
    this.gpu.writeBuffer(this.buffer, this.byteOffset, typed);
  }

  /** Read back as a typed array (prefer `gpu.read([...])` for several tensors). */
  async read(): Promise<Float32Array> {
    const [data] = await this.gpu.read([this]);
    return data as Float32Array;
  }

  /** Read back u32 contents. */
  async readU32(): Promise<Uint32Array> {
    const [data] = await this.gpu.read([this]);
    return data as Uint32Array;
  }

  /** Return the buffer to the pool. Work already encoded still sees the old contents. */
  release(): void {
    if (this.released || !this.owner) return;
    this.released = true;
    this.gpu.pool.release(this.buffer);
  }
}

/** Number of elements in a shape. */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`bad shape [${shape}]`);
    n *= d;
  }
  return n;
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

const sourceCache = new Map<string, string>();

/** Read `kernels/<file>.wgsl` (cached). */
export function loadKernelSource(file: string): string {
  let source = sourceCache.get(file);
  if (source === undefined) {
    const url = new URL(`../kernels/${file}.wgsl`, import.meta.url);
    try {
      source = Deno.readTextFileSync(url);
    } catch (e) {
      throw new Error(`kernel source kernels/${file}.wgsl not found: ${(e as Error).message}`);
    }
    sourceCache.set(file, source);
  }
  return source;
}

/** Replace every `{{KEY}}` in a WGSL source; an unknown placeholder is an error. */
export function specialise(source: string, values: Record<string, string | number>): string {
  const out = source.replace(/\{\{(\w+)\}\}/g, (_, key: string) => {
    if (!(key in values)) throw new Error(`WGSL placeholder {{${key}}} has no value`);
    return String(values[key]);
  });
  return out;
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
