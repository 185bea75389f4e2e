/**
 * Operand textures: f32 tensors copied into pooled `rgba32float` storage textures, which CPU
 * adapters (lavapipe) load per lane at about a third of the cost of storage-buffer elements.
 */
import type { Tensor } from "./tensor.ts";

/**
 * Texels per row of an operand texture (see {@link TexturePool.acquire}): vec4 number i of a
 * tensor sits at texel (i % OPERAND_TEXTURE_WIDTH, i / OPERAND_TEXTURE_WIDTH). A power of two, so
 * kernels address it with a mask and a shift; rows of 64 KiB satisfy copyBufferToTexture's
 * 256-byte rule.
 */
export const OPERAND_TEXTURE_WIDTH = 4096;

/** A tensor's contents in a pooled texture; `release` returns the texture to the pool. */
export interface OperandTexture {
  view: GPUTextureView;
  release(): void;
}

/** Reuses operand textures by size, and holds the placeholder for unused texture bindings. */
export class TexturePool {
  private free = new Map<string, GPUTexture[]>();
  private placeholderView: GPUTextureView | undefined;

  constructor(private device: GPUDevice) {}

  /** Whether {@link acquire} can take `t`: f32, 16-byte aligned, within the size limit. */
  fits(t: Tensor): boolean {
    const texels = Math.max(1, Math.ceil(t.size / 4));
    const maxRows = this.device.limits.maxTextureDimension2D;
    return t.dtype === "f32" && t.byteOffset % 16 === 0 &&
      t.byteOffset + texels * 16 <= t.buffer.size &&
      OPERAND_TEXTURE_WIDTH <= maxRows && texels <= OPERAND_TEXTURE_WIDTH * maxRows;
  }

  /**
   * Copy a f32 tensor into a pooled `rgba32float` texture (STORAGE_BINDING), laid out as its vec4
   * in order, {@link OPERAND_TEXTURE_WIDTH} per row; texels past the end are unspecified. The
   * copy is encoded on `encoder`, after work already encoded there; release once the reading
   * dispatch is encoded (like tensors, later work sees the texture reused, earlier work its
   * contents).
   */
  acquire(encoder: GPUCommandEncoder, t: Tensor): OperandTexture {
    if (!this.fits(t)) {
      throw new Error(
        `operandTexture: tensor [${t.shape}] (${t.dtype}, byte offset ${t.byteOffset}) does not ` +
          "fit an rgba32float texture (see fitsOperandTexture)",
      );
    }
    const texels = Math.max(1, Math.ceil(t.size / 4));
    const width = OPERAND_TEXTURE_WIDTH;
    const height = Math.ceil(texels / width);
    const key = `${width}x${height}`;
    const texture = this.free.get(key)?.pop() ?? this.device.createTexture({
      label: `operand-texture-${key}`,
      size: [width, height],
      format: "rgba32float",
      usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_DST,
    });
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
        const list = this.free.get(key) ?? [];
        list.push(texture);
        this.free.set(key, list);
      },
    };
  }

  /** A 1x1 `rgba32float` storage texture to bind where a kernel's texture operand is unused. */
  placeholder(): GPUTextureView {
    this.placeholderView ??= this.device.createTexture({
      label: "placeholder-texture",
      size: [1, 1],
      format: "rgba32float",
      usage: GPUTextureUsage.STORAGE_BINDING,
    }).createView();
    return this.placeholderView;
  }
}
