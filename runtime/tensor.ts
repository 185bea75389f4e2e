/**
 * Tensors (a shape and dtype over a GPU buffer, row-major, activations NHWC) and the buffer pool
 * they draw from.
 */
import type { Gpu } from "./device.ts";

/** Element types a tensor may hold. */
export type DType = "f32" | "u32";

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
    /**
     * Bytes a view binds when more than its elements (a slot in a flat buffer padded past the
     * tensor's end, as an owned tensor's pooled buffer is): kernels may read whole vec4 there.
     */
    readonly slotBytes?: number,
  ) {
    if (slotBytes !== undefined && (slotBytes < this.byteLength || slotBytes % 4 !== 0)) {
      throw new Error(`tensor [${shape}]: slot of ${slotBytes} bytes cannot hold it`);
    }
  }

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
    if (this.byteOffset === 0 && this.owner) return undefined;
    return this.slotBytes ?? Math.max(4, this.byteLength);
  }

  /** Same buffer, another shape with the same element count. */
  reshape(shape: readonly number[]): Tensor {
    if (shapeSize(shape) !== this.size) {
      throw new Error(`reshape: [${this.shape}] has ${this.size} elements, not [${shape}]`);
    }
    return new Tensor(
      this.gpu,
      [...shape],
      this.dtype,
      this.buffer,
      this.byteOffset,
      false,
      this.slotBytes,
    );
  }

  /**
   * Rows first .. first + count of a [rows, ..., C] tensor as a [count, C] view of the same buffer,
   * bound at its offset, which the adapter must allow (minStorageBufferOffsetAlignment: the
   * views of a stacked batch divisible by 64 always are).
   */
  rowBlock(first: number, count: number): Tensor {
    const channels = this.shape[this.shape.length - 1];
    const byteOffset = this.byteOffset + first * channels * 4;
    const alignment = this.gpu.limits.minStorageBufferOffsetAlignment;
    if (byteOffset % alignment !== 0 || (first + count) * channels > this.size) {
      throw new Error(
        `rows ${first}..${first + count} of a [${this.shape}] tensor: not inside it, or starting ` +
          `at byte ${byteOffset}, not a multiple of the adapter's binding alignment ${alignment} ` +
          "(use a batch size divisible by 64)",
      );
    }
    return new Tensor(this.gpu, [count, channels], this.dtype, this.buffer, byteOffset, false);
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
