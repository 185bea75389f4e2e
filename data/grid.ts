/**
 * A picture of a batch for people: rows of images (originals, view 1, view 2) laid out in a
 * grid, views mapped back from normalised values to 8-bit pixels. Used by `tasks/preview.ts`.
 */

/** One row of the grid: `count` images of height x width x channels. */
export interface GridRow {
  height: number;
  width: number;
  channels: number;
  /** uint8 pixels, or normalised f32 values with the mean/std to undo. */
  pixels: Uint8Array | Float32Array;
  mean?: readonly number[];
  std?: readonly number[];
}

/** The composed picture (HWC, `channels` 1 or 3). */
export interface GridImage {
  width: number;
  height: number;
  channels: number;
  data: Uint8Array;
}

const GAP = 2;
const BACKGROUND = 128;

/**
 * Lay out `count` images per row, each centred in a square cell as large as the largest image,
 * scaled up by `zoom` (nearest neighbour), with a grey gap between cells.
 */
export function composeGrid(rows: GridRow[], count: number, zoom = 1): GridImage {
  const channels = rows[0].channels;
  if (rows.some((r) => r.channels !== channels)) {
    throw new Error("composeGrid: rows differ in channels");
  }
  const cell = Math.max(...rows.map((r) => Math.max(r.height, r.width))) * zoom;
  const width = count * cell + (count + 1) * GAP;
  const height = rows.length * cell + (rows.length + 1) * GAP;
  const data = new Uint8Array(width * height * channels).fill(BACKGROUND);
  rows.forEach((row, r) => {
    const imageSize = row.height * row.width * channels;
    if (row.pixels.length < count * imageSize) {
      throw new Error(
        `composeGrid: row ${r} holds ${row.pixels.length / imageSize} images, not ${count}`,
      );
    }
    const toByte = row.pixels instanceof Uint8Array
      ? (v: number) => v
      : (v: number, c: number) =>
        Math.round(255 * Math.min(1, Math.max(0, v * (row.std?.[c] ?? 1) + (row.mean?.[c] ?? 0))));
    const offsetY = GAP + r * (cell + GAP) + Math.floor((cell - row.height * zoom) / 2);
    for (let i = 0; i < count; i++) {
      const offsetX = GAP + i * (cell + GAP) + Math.floor((cell - row.width * zoom) / 2);
      for (let y = 0; y < row.height * zoom; y++) {
        for (let x = 0; x < row.width * zoom; x++) {
          const source = i * imageSize +
            (Math.floor(y / zoom) * row.width + Math.floor(x / zoom)) * channels;
          const target = ((offsetY + y) * width + offsetX + x) * channels;
          for (let c = 0; c < channels; c++) data[target + c] = toByte(row.pixels[source + c], c);
        }
      }
    }
  });
  return { width, height, channels, data };
}
