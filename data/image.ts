/**
 * Decoding JPEG/PNG files to RGB (npm `jpeg-js`, `fast-png`) and resizing them to a square on the
 * CPU. Used by the decode workers of the folder dataset (and directly when workers are off).
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
 * Decode a PNG or JPEG (recognised by content, not name) to 8-bit RGB. Grey images are expanded to
 * three channels, alpha is dropped, 16-bit PNG samples keep their high byte. Throws an Error whose
 * message says what is wrong (the caller adds the file name).
 */
export function decodeImage(bytes: Uint8Array): RgbImage {
  if (isPng(bytes)) return decodePngToRgb(bytes);
  if (isJpeg(bytes)) {
    const image = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false });
    if (image.width <= 0 || image.height <= 0) throw new Error("JPEG has no pixels");
    return { width: image.width, height: image.height, data: image.data };
  }
  throw new Error("neither a PNG nor a JPEG (unknown file signature)");
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

/** Filter taps of one output coordinate: the first source index and normalised weights. */
interface Taps {
  first: number;
  weights: Float64Array;
}

/**
 * Antialiased linear resampling weights (Pillow's `resize(box=...)`): output pixel `o` covers
 * source [boxStart + o*scale, boxStart + (o+1)*scale); the triangle filter is widened by the
 * scale when shrinking, so it averages the covered area, and is plain bilinear when enlarging.
 * Taps may reach past the box into the rest of the image (as when resizing the whole image and
 * cropping afterwards); taps outside [0, inSize) are dropped and the rest renormalised.
 */
function linearTaps(boxStart: number, boxEnd: number, inSize: number, outSize: number): Taps[] {
  const scale = (boxEnd - boxStart) / outSize;
  const stretch = Math.max(scale, 1);
  const support = stretch;
  const taps: Taps[] = [];
  for (let o = 0; o < outSize; o++) {
    const center = boxStart + (o + 0.5) * scale;
    const first = Math.max(Math.trunc(center - support + 0.5), 0);
    const last = Math.min(Math.trunc(center + support + 0.5), inSize);
    const weights = new Float64Array(Math.max(last - first, 1));
    let sum = 0;
    for (let k = 0; k < last - first; k++) {
      const w = Math.max(0, 1 - Math.abs((first + k - center + 0.5) / stretch));
      weights[k] = w;
      sum += w;
    }
    if (sum > 0) { for (let k = 0; k < weights.length; k++) weights[k] /= sum; }
    else weights[0] = 1;
    taps.push({ first: Math.min(first, inSize - 1), weights });
  }
  return taps;
}

/**
 * Resize an RGB image to `size` x `size`: the shorter side is scaled to `size` and the longer
 * one centre-cropped (torchvision's Resize(size) + CenterCrop(size), done as one antialiased
 * bilinear resample of the centred square).
 */
export function resizeToSquare(image: RgbImage, size: number): Uint8Array {
  const { width, height, data } = image;
  const side = Math.min(width, height);
  const left = Math.floor((width - side) / 2);
  const top = Math.floor((height - side) / 2);
  const columnTaps = linearTaps(left, left + side, width, size);
  const rowTaps = linearTaps(top, top + side, height, size);
  // Horizontal pass over the rows the vertical pass reads, in float.
  const firstRow = rowTaps[0].first;
  const lastRow = rowTaps[size - 1].first + rowTaps[size - 1].weights.length;
  const wide = new Float32Array(height * size * 3);
  for (let y = firstRow; y < lastRow; y++) {
    for (let x = 0; x < size; x++) {
      const { first, weights } = columnTaps[x];
      let r = 0, g = 0, b = 0;
      for (let k = 0; k < weights.length; k++) {
        const s = 3 * (y * width + first + k);
        r += weights[k] * data[s];
        g += weights[k] * data[s + 1];
        b += weights[k] * data[s + 2];
      }
      const o = 3 * (y * size + x);
      wide[o] = r;
      wide[o + 1] = g;
      wide[o + 2] = b;
    }
  }
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const { first, weights } = rowTaps[y];
    for (let x = 0; x < size; x++) {
      for (let c = 0; c < 3; c++) {
        let v = 0;
        for (let k = 0; k < weights.length; k++) {
          v += weights[k] * wide[3 * ((first + k) * size + x) + c];
        }
        out[3 * (y * size + x) + c] = Math.min(255, Math.max(0, Math.round(v)));
      }
    }
  }
  return out;
}

/** Read, decode and resize one file; errors name the file and the fix. */
export async function loadImageFile(path: string, size: number): Promise<Uint8Array> {
  const bytes = await Deno.readFile(path);
  let image: RgbImage;
  try {
    image = decodeImage(bytes);
  } catch (e) {
    throw new Error(
      `${path}: corrupt or unsupported image (${(e as Error).message}); delete or replace it`,
    );
  }
  return resizeToSquare(image, size);
}
