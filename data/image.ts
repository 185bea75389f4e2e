/**
 * Decoding JPEG/PNG files to RGB (npm `jpeg-js`, `fast-png`; a JPEG's Exif orientation is
 * applied, as PIL's `ImageOps.exif_transpose` and every photo viewer do) and resampling them on the CPU the
 * way torchvision does on PIL images: the evaluation resize + centre crop and the random resized
 * crop of training. Used by the decode workers of the folder dataset (and directly when workers
 * are off).
 */
// Versioned npm: specifiers (not bare names from package.json) so that mod.ts imports from any
// directory and any Deno project; here they resolve from node_modules (same versions as the lock).
// deno-lint-ignore no-import-prefix
import jpeg from "npm:jpeg-js@0.4.4";
// deno-lint-ignore no-import-prefix
import { convertIndexedToRgb, decode as decodePng } from "npm:fast-png@8.0.0";

/** An 8-bit RGB image, HWC interleaved. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** Whether bytes start with the PNG signature. */
export function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e &&
    bytes[3] === 0x47;
}

/** Whether bytes start with the JPEG start-of-image marker. */
export function isJpeg(bytes: Uint8Array): boolean {
  return bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}

/**
 * Decode a PNG or JPEG (recognised by content, not name) to 8-bit RGB, a JPEG turned upright by
 * its Exif orientation. Grey images are expanded to three channels, alpha is dropped, 16-bit PNG
 * samples keep their high byte. Throws an Error whose message says what is wrong (the caller adds
 * the file name).
 */
export function decodeImage(bytes: Uint8Array): RgbImage {
  if (isPng(bytes)) return decodePngToRgb(bytes);
  if (isJpeg(bytes)) {
    const image = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false });
    if (image.width <= 0 || image.height <= 0) throw new Error("JPEG has no pixels");
    const stored = { width: image.width, height: image.height, data: image.data };
    return applyOrientation(stored, jpegOrientation(bytes));
  }
  throw new Error("neither a PNG nor a JPEG (unknown file signature)");
}

/**
 * The Exif orientation (1-8) of a JPEG: tag 0x0112 of IFD0 in its APP1 "Exif" segment; 1 (as
 * stored) when there is none or it cannot be read (a damaged Exif block must not lose the image).
 */
export function jpegOrientation(bytes: Uint8Array): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 2; // after SOI
  while (at + 4 <= bytes.length && bytes[at] === 0xff) {
    const marker = bytes[at + 1];
    // Start of scan or end of image: the metadata segments are over.
    if (marker === 0xda || marker === 0xd9) return 1;
    const length = view.getUint16(at + 2);
    const body = at + 4;
    if (length < 2 || body + length - 2 > bytes.length) return 1;
    if (marker === 0xe1 && length >= 16 && readAscii(bytes, body, 6) === "Exif\0\0") {
      return exifOrientation(view, body + 6, body + length - 2);
    }
    at = body + length - 2;
  }
  return 1;
}

function readAscii(bytes: Uint8Array, at: number, length: number): string {
  return String.fromCharCode(...bytes.subarray(at, at + length));
}

/** Orientation from the TIFF structure at [tiff, end) of an Exif segment (1 if absent or bad). */
function exifOrientation(view: DataView, tiff: number, end: number): number {
  const order = view.getUint16(tiff);
  if (order !== 0x4949 && order !== 0x4d4d) return 1; // "II" little-endian, "MM" big-endian
  const little = order === 0x4949;
  const u16 = (at: number) => at + 2 <= end ? view.getUint16(at, little) : -1;
  const u32 = (at: number) => at + 4 <= end ? view.getUint32(at, little) : -1;
  if (u16(tiff + 2) !== 42) return 1;
  const ifd = u32(tiff + 4);
  if (ifd < 8) return 1;
  const count = u16(tiff + ifd);
  for (let i = 0; i < count; i++) {
    const entry = tiff + ifd + 2 + 12 * i;
    if (entry + 12 > end) return 1;
    if (u16(entry) === 0x0112) {
      // A SHORT (type 3) held in the entry's value field.
      const value = u16(entry + 2) === 3 ? u16(entry + 8) : 1;
      return value >= 1 && value <= 8 ? value : 1;
    }
  }
  return 1;
}

/**
 * The upright image of one stored with Exif `orientation` (1: as stored; 2: mirrored; 3: turned
 * 180 degrees; 4: flipped upside down; 5: transposed; 6: needs 90 degrees clockwise; 7:
 * transverse; 8: needs 90 degrees counter-clockwise).
 */
export function applyOrientation(image: RgbImage, orientation: number): RgbImage {
  if (orientation === 1) return image;
  const { width: w, height: h, data } = image;
  const swaps = orientation >= 5;
  const width = swaps ? h : w;
  const height = swaps ? w : h;
  // Source column and row of output pixel (x, y).
  const source: Record<number, (x: number, y: number) => [number, number]> = {
    2: (x, y) => [w - 1 - x, y],
    3: (x, y) => [w - 1 - x, h - 1 - y],
    4: (x, y) => [x, h - 1 - y],
    5: (x, y) => [y, x],
    6: (x, y) => [y, h - 1 - x],
    7: (x, y) => [w - 1 - y, h - 1 - x],
    8: (x, y) => [w - 1 - y, x],
  };
  const from = source[orientation];
  if (!from) throw new Error(`Exif orientation must be 1 to 8, not ${orientation}`);
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [sx, sy] = from(x, y);
      const s = 3 * (sy * w + sx);
      const o = 3 * (y * width + x);
      out[o] = data[s];
      out[o + 1] = data[s + 1];
      out[o + 2] = data[s + 2];
    }
  }
  return { width, height, data: out };
}

function decodePngToRgb(bytes: Uint8Array): RgbImage {
  const png = decodePng(bytes);
  const { width, height } = png;
  if (width <= 0 || height <= 0) throw new Error("PNG has no pixels");
  const out = new Uint8Array(width * height * 3);
  if (png.palette) {
    const rgb = convertIndexedToRgb(png);
    const channels = rgb.length / (width * height);
    for (let p = 0; p < width * height; p++) {
      for (let c = 0; c < 3; c++) out[3 * p + c] = rgb[channels * p + c];
    }
    return { width, height, data: out };
  }
  const channels = png.channels;
  const data = png.data;
  const sample = png.depth === 16
    ? (i: number) => data[i] >>> 8
    : png.depth === 8
    ? (i: number) => data[i]
    : (i: number) => Math.round(data[i] * 255 / ((1 << png.depth) - 1));
  if (data.length < width * height * channels) throw new Error("PNG pixel data is truncated");
  for (let p = 0; p < width * height; p++) {
    if (channels >= 3) {
      for (let c = 0; c < 3; c++) out[3 * p + c] = sample(channels * p + c);
    } else {
      const grey = sample(channels * p);
      out[3 * p] = out[3 * p + 1] = out[3 * p + 2] = grey;
    }
  }
  return { width, height, data: out };
}

/** Resampling filter of the CPU resize (Pillow's BILINEAR and BICUBIC, a = -0.5). */
export type ResizeFilter = "bilinear" | "bicubic";

/** The filter's half-width at scale 1 and its weight at distance x. */
const FILTERS: Record<ResizeFilter, { support: number; weight: (x: number) => number }> = {
  bilinear: { support: 1, weight: (x) => Math.max(0, 1 - Math.abs(x)) },
  bicubic: {
    support: 2,
    weight: (x) => {
      const a = Math.abs(x);
      const A = -0.5;
      if (a < 1) return ((A + 2) * a - (A + 3)) * a * a + 1;
      if (a < 2) return (((a - 5) * a + 8) * a - 4) * A;
      return 0;
    },
  },
};

/** Filter taps of one output coordinate: the first source index and normalised weights. */
interface Taps {
  first: number;
  weights: Float64Array;
}

/**
 * Antialiased resampling weights (Pillow's `resize(box=...)`): output pixel `o` is centred at
 * source `boxStart + (o + 0.5) * scale`, scale = (boxEnd - boxStart) / outSize; the filter is
 * widened by the scale when shrinking, so it averages the covered area. Taps outside
 * [`validStart`, `validEnd`) are dropped and the rest renormalised: the whole image when
 * resizing it and cropping afterwards (Resize + CenterCrop), the box itself when the box was cut
 * out first (RandomResizedCrop = crop, then resize).
 */
function resampleTaps(
  boxStart: number,
  boxEnd: number,
  validStart: number,
  validEnd: number,
  outSize: number,
  filter: ResizeFilter,
): Taps[] {
  const { support: baseSupport, weight } = FILTERS[filter];
  const scale = (boxEnd - boxStart) / outSize;
  const stretch = Math.max(scale, 1);
  const support = baseSupport * stretch;
  const taps: Taps[] = [];
  for (let o = 0; o < outSize; o++) {
    // Pillow works in coordinates relative to the valid range.
    const center = boxStart - validStart + (o + 0.5) * scale;
    const first = Math.max(Math.trunc(center - support + 0.5), 0);
    const last = Math.min(Math.trunc(center + support + 0.5), validEnd - validStart);
    const weights = new Float64Array(Math.max(last - first, 1));
    let sum = 0;
    for (let k = 0; k < last - first; k++) {
      const w = weight((first + k - center + 0.5) / stretch);
      weights[k] = w;
      sum += w;
    }
    if (sum !== 0) { for (let k = 0; k < weights.length; k++) weights[k] /= sum; }
    else weights[0] = 1;
    taps.push({ first: validStart + Math.min(first, validEnd - validStart - 1), weights });
  }
  return taps;
}

/**
 * Separable resample of an RGB image to `outWidth` x `outHeight` with precomputed taps (columns
 * then rows, as Pillow; the intermediate clipped to [0, 255] but kept in float), rounded and
 * clamped to 8 bits. `mirror` reverses
 * the output columns (a horizontal flip).
 */
function resample(
  image: RgbImage,
  columnTaps: Taps[],
  rowTaps: Taps[],
  mirror = false,
): Uint8Array {
  const { width, data } = image;
  const outWidth = columnTaps.length;
  const outHeight = rowTaps.length;
  // Horizontal pass over the rows the vertical pass reads.
  const firstRow = Math.min(...rowTaps.map((t) => t.first));
  const endRow = Math.max(...rowTaps.map((t) => t.first + t.weights.length));
  const wide = new Float32Array((endRow - firstRow) * outWidth * 3);
  for (let y = firstRow; y < endRow; y++) {
    for (let x = 0; x < outWidth; x++) {
      const { first, weights } = columnTaps[x];
      let r = 0, g = 0, b = 0;
      for (let k = 0; k < weights.length; k++) {
        const s = 3 * (y * width + first + k);
        r += weights[k] * data[s];
        g += weights[k] * data[s + 1];
        b += weights[k] * data[s + 2];
      }
      const o = 3 * ((y - firstRow) * outWidth + (mirror ? outWidth - 1 - x : x));
      // Clipped like Pillow's 8-bit intermediate (bicubic overshoots), not rounded.
      wide[o] = Math.min(255, Math.max(0, r));
      wide[o + 1] = Math.min(255, Math.max(0, g));
      wide[o + 2] = Math.min(255, Math.max(0, b));
    }
  }
  const out = new Uint8Array(outWidth * outHeight * 3);
  for (let y = 0; y < outHeight; y++) {
    const { first, weights } = rowTaps[y];
    for (let x = 0; x < outWidth; x++) {
      for (let c = 0; c < 3; c++) {
        let v = 0;
        for (let k = 0; k < weights.length; k++) {
          v += weights[k] * wide[3 * ((first - firstRow + k) * outWidth + x) + c];
        }
        out[3 * (y * outWidth + x) + c] = Math.min(255, Math.max(0, Math.round(v)));
      }
    }
  }
  return out;
}

/**
 * The shorter side that evaluation resizes to before its centre crop of `imageSize`: the
 * standard ImageNet ratio 256/224 (224 -> 256, 32 -> 37).
 */
export function evalResizeSize(imageSize: number): number {
  return Math.round(imageSize * 256 / 224);
}

/** Python 3's round() on x.5 (to even), which torchvision's CenterCrop uses. */
function pythonRound(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * torchvision's evaluation transform Resize(`resize`) + CenterCrop(`size`) on a PIL image,
 * antialiased bilinear: the shorter side becomes `resize`, the longer int(resize * long /
 * short) (aspect kept), then the centred `size` x `size` square is cut out. Done as one
 * resample of the crop's footprint in the source, with taps reaching the whole image as the
 * full resize would. Requires resize >= size.
 */
export function resizeCentreCrop(image: RgbImage, resize: number, size: number): Uint8Array {
  if (!(Number.isInteger(resize) && Number.isInteger(size) && size >= 1 && resize >= size)) {
    throw new Error(`resizeCentreCrop: need integers resize >= size >= 1, got ${resize}, ${size}`);
  }
  const { width, height } = image;
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const resizedLong = Math.trunc(resize * long / short);
  const resizedWidth = width <= height ? resize : resizedLong;
  const resizedHeight = width <= height ? resizedLong : resize;
  const left = pythonRound((resizedWidth - size) / 2);
  const top = pythonRound((resizedHeight - size) / 2);
  const scaleX = width / resizedWidth;
  const scaleY = height / resizedHeight;
  const columnTaps = resampleTaps(
    left * scaleX,
    (left + size) * scaleX,
    0,
    width,
    size,
    "bilinear",
  );
  const rowTaps = resampleTaps(top * scaleY, (top + size) * scaleY, 0, height, size, "bilinear");
  return resample(image, columnTaps, rowTaps);
}

/** A crop box in source pixels (integers, inside the image). */
export interface PixelBox {
  top: number;
  left: number;
  height: number;
  width: number;
}

/**
 * torchvision's resized_crop on a PIL image: cut `box` out, resize it to `size` x `size` with
 * the antialiased `filter` (taps stay inside the box), then mirror it when `flip` is set
 * (RandomResizedCrop followed by RandomHorizontalFlip).
 */
export function resizedCrop(
  image: RgbImage,
  box: PixelBox,
  size: number,
  filter: ResizeFilter,
  flip: boolean,
): Uint8Array {
  const { top, left, height, width } = box;
  if (
    !(Number.isInteger(top) && Number.isInteger(left) && height >= 1 && width >= 1 &&
      top >= 0 && left >= 0 && top + height <= image.height && left + width <= image.width)
  ) {
    throw new Error(
      `resizedCrop: box ${JSON.stringify(box)} is not inside ${image.height}x${image.width}`,
    );
  }
  const columnTaps = resampleTaps(left, left + width, left, left + width, size, filter);
  const rowTaps = resampleTaps(top, top + height, top, top + height, size, filter);
  return resample(image, columnTaps, rowTaps, flip);
}

/** Read and decode one file; errors name the file and the fix. */
export async function readImageFile(path: string): Promise<RgbImage> {
  const bytes = await Deno.readFile(path);
  try {
    return decodeImage(bytes);
  } catch (e) {
    throw new Error(
      `${path}: corrupt or unsupported image (${(e as Error).message}); delete or replace it`,
    );
  }
}
