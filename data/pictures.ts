/**
 * Pictures of what a backbone learned, drawn as RGB images (PNG-ready, see `tasks/eval.ts`):
 * a retrieval grid (each row a query and its nearest neighbours, other-class neighbours framed in
 * red), a 2-D embedding map coloured by class, and a confusion matrix. Class numbers are written
 * with a tiny built-in digit font, so nothing here needs a font file.
 */

/** An 8-bit RGB picture, HWC interleaved. */
export interface RgbPicture {
  width: number;
  height: number;
  channels: 3;
  data: Uint8Array;
}

type Colour = readonly [number, number, number];

const WHITE: Colour = [255, 255, 255];
const GREY: Colour = [128, 128, 128];
const DARK: Colour = [40, 40, 40];
const RED: Colour = [230, 20, 20];
const GREEN: Colour = [40, 170, 60];
const BLUE: Colour = [40, 90, 230];

// Tableau's ten categorical colours; further classes get evenly spaced hues.
const TABLEAU: Colour[] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
  [227, 119, 194],
  [127, 127, 127],
  [188, 189, 34],
  [23, 190, 207],
];

/** A distinct colour per class. */
export function classColour(c: number, classes: number): Colour {
  if (classes <= TABLEAU.length) return TABLEAU[c];
  const hue = (c * 360 / classes + (c % 2) * 180 / classes) % 360;
  const x = 1 - Math.abs((hue / 60) % 2 - 1);
  const [r, g, b] = hue < 60
    ? [1, x, 0]
    : hue < 120
    ? [x, 1, 0]
    : hue < 180
    ? [0, 1, x]
    : hue < 240
    ? [0, x, 1]
    : hue < 300
    ? [x, 0, 1]
    : [1, 0, x];
  return [Math.round(40 + 190 * r), Math.round(40 + 190 * g), Math.round(40 + 190 * b)];
}

function blank(width: number, height: number, colour: Colour): RgbPicture {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) data.set(colour, i * 3);
  return { width, height, channels: 3, data };
}

function fillRect(
  picture: RgbPicture,
  x0: number,
  y0: number,
  w: number,
  h: number,
  colour: Colour,
): void {
  for (let y = Math.max(0, y0); y < Math.min(picture.height, y0 + h); y++) {
    for (let x = Math.max(0, x0); x < Math.min(picture.width, x0 + w); x++) {
      picture.data.set(colour, (y * picture.width + x) * 3);
    }
  }
}

// 3x5 digits, one string of 15 cells per digit, row by row ('#' = ink).
const DIGITS = [
  "####.##.##.####",
  ".#.##..#..#.###",
  "###..#####..###",
  "###..####..####",
  "#.##.####..#..#",
  "####..###..####",
  "####..####.####",
  "###..#..#..#..#",
  "####.#####.####",
  "####.####..####",
];

/** Write a non-negative integer at (x, y) with the digit font scaled by `scale`; returns width. */
export function drawNumber(
  picture: RgbPicture,
  value: number,
  x: number,
  y: number,
  scale: number,
  colour: Colour,
): number {
  const text = String(Math.max(0, Math.round(value)));
  for (let i = 0; i < text.length; i++) {
    const glyph = DIGITS[Number(text[i])];
    for (let row = 0; row < 5; row++) {
      for (let col = 0; col < 3; col++) {
        if (glyph[row * 3 + col] === "#") {
          fillRect(picture, x + (i * 4 + col) * scale, y + row * scale, scale, scale, colour);
        }
      }
    }
  }
  return (text.length * 4 - 1) * scale;
}

/** One image of a retrieval row with how it relates to the row's query. */
export interface RetrievalCell {
  /** uint8 HWC pixels of one image. */
  pixels: Uint8Array;
  /** The query itself, a neighbour of the query's class, or one of another class. */
  role: "query" | "same" | "other" | "unlabelled";
}

/** Image size and channels, as datasets state them. */
export interface ImageShape {
  height: number;
  width: number;
  channels: number;
}

/**
 * Cut the pixels of the queries and of their neighbours (all rows' neighbours in order, as one
 * `batch` call returns them) into retrieval rows, each neighbour marked same/other class.
 */
export function retrievalRows(input: {
  queryPixels: Uint8Array;
  neighbourPixels: Uint8Array;
  image: ImageShape;
  queryLabels: number[];
  neighbourLabels: number[][];
  labelled: boolean;
}): RetrievalCell[][] {
  const bytes = input.image.height * input.image.width * input.image.channels;
  let next = 0;
  return input.queryLabels.map((label, i) => [
    { pixels: input.queryPixels.subarray(i * bytes, (i + 1) * bytes), role: "query" },
    ...input.neighbourLabels[i].map((neighbourLabel): RetrievalCell => {
      const pixels = input.neighbourPixels.subarray(next * bytes, ++next * bytes);
      const role = !input.labelled ? "unlabelled" : neighbourLabel === label ? "same" : "other";
      return { pixels, role };
    }),
  ]);
}

/**
 * Rows of [query, neighbours...]: images scaled by `zoom` (nearest neighbour; default: to about
 * 96 pixels) inside a 3-pixel
 * frame: blue for the query, red for a neighbour of another class, green for the same class,
 * grey where there are no labels. A wider gap separates the query from its neighbours.
 */
export function drawRetrievalGrid(
  rows: RetrievalCell[][],
  image: ImageShape,
  zoom = Math.max(1, Math.floor(96 / Math.max(image.height, image.width))),
): RgbPicture {
  const frame = 3;
  const gap = 4;
  const cellW = image.width * zoom + 2 * frame;
  const cellH = image.height * zoom + 2 * frame;
  const columns = Math.max(...rows.map((r) => r.length));
  const width = gap + columns * (cellW + gap) + 2 * gap;
  const height = gap + rows.length * (cellH + gap);
  const picture = blank(width, height, WHITE);
  const frameColour = { query: BLUE, same: GREEN, other: RED, unlabelled: GREY };
  rows.forEach((row, r) => {
    row.forEach((cell, i) => {
      const x0 = gap + i * (cellW + gap) + (i > 0 ? 2 * gap : 0);
      const y0 = gap + r * (cellH + gap);
      fillRect(picture, x0, y0, cellW, cellH, frameColour[cell.role]);
      for (let y = 0; y < image.height * zoom; y++) {
        for (let x = 0; x < image.width * zoom; x++) {
          const source = (Math.floor(y / zoom) * image.width + Math.floor(x / zoom)) *
            image.channels;
          const target = ((y0 + frame + y) * width + x0 + frame + x) * 3;
          for (let c = 0; c < 3; c++) {
            picture.data[target + c] = cell.pixels[source + (image.channels === 3 ? c : 0)];
          }
        }
      }
    });
  });
  return picture;
}

/**
 * A scatter plot of 2-D points (rows of `points`) coloured by class, fitted into a square of
 * `size` pixels, with a legend (colour swatch and class number) on the right.
 */
export function drawEmbeddingMap(
  points: Float32Array,
  labels: ArrayLike<number>,
  classes: number,
  size = 640,
): RgbPicture {
  const margin = 12;
  const legendWidth = classes > 1 ? 70 : 0;
  const picture = blank(size + legendWidth, size, WHITE);
  const n = points.length / 2;
  let [minX, maxX, minY, maxY] = [Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i < n; i++) {
    minX = Math.min(minX, points[2 * i]);
    maxX = Math.max(maxX, points[2 * i]);
    minY = Math.min(minY, points[2 * i + 1]);
    maxY = Math.max(maxY, points[2 * i + 1]);
  }
  const span = Math.max(maxX - minX, maxY - minY, 1e-12);
  const scale = (size - 2 * margin) / span;
  const offsetX = margin + ((size - 2 * margin) - (maxX - minX) * scale) / 2;
  const offsetY = margin + ((size - 2 * margin) - (maxY - minY) * scale) / 2;
  const radius = 2;
  for (let i = 0; i < n; i++) {
    const cx = Math.round(offsetX + (points[2 * i] - minX) * scale);
    const cy = Math.round(offsetY + (points[2 * i + 1] - minY) * scale);
    const colour = classes > 1 ? classColour(labels[i], classes) : BLUE;
    for (let dy = -radius; dy <= radius; dy++) {
      for (let dx = -radius; dx <= radius; dx++) {
        if (dx * dx + dy * dy <= radius * radius + 1) {
          fillRect(picture, cx + dx, cy + dy, 1, 1, colour);
        }
      }
    }
  }
  if (classes > 1) {
    const row = Math.min(24, Math.floor((size - 2 * margin) / classes));
    const digitScale = Math.max(1, Math.floor(row / 8));
    for (let c = 0; c < classes; c++) {
      const y = margin + c * row;
      fillRect(picture, size + 4, y, row - 4, row - 4, classColour(c, classes));
      drawNumber(
        picture,
        c,
        size + row + 6,
        y + Math.floor((row - 4 - 5 * digitScale) / 2),
        digitScale,
        DARK,
      );
    }
  }
  return picture;
}

/**
 * The confusion matrix as a heat map: row = true class, column = predicted class, each cell
 * shaded by its share of the row (white 0 -> dark blue 1) and labelled with that share in
 * percent; class numbers on the left and top; per-class accuracy is the diagonal.
 */
export function drawConfusionMatrix(matrix: number[][]): RgbPicture {
  const classes = matrix.length;
  const cell = classes <= 20 ? 30 : classes <= 50 ? 14 : 7;
  const digitScale = cell >= 30 ? 2 : 1;
  const labelSpace = cell >= 14 ? 10 + 11 * digitScale : 4;
  const size = labelSpace + classes * cell + 4;
  const picture = blank(size, size, WHITE);
  for (let t = 0; t < classes; t++) {
    const total = matrix[t].reduce((a, b) => a + b, 0);
    for (let p = 0; p < classes; p++) {
      const share = total > 0 ? matrix[t][p] / total : 0;
      const colour: Colour = [
        Math.round(255 - share * (255 - 8)),
        Math.round(255 - share * (255 - 48)),
        Math.round(255 - share * (255 - 107)),
      ];
      const x = labelSpace + p * cell;
      const y = labelSpace + t * cell;
      fillRect(picture, x, y, cell - 1, cell - 1, colour);
      if (cell >= 30 && matrix[t][p] > 0) {
        const percent = Math.round(share * 100);
        const textWidth = (String(percent).length * 4 - 1) * digitScale;
        drawNumber(
          picture,
          percent,
          x + Math.floor((cell - 1 - textWidth) / 2),
          y + Math.floor((cell - 1 - 5 * digitScale) / 2),
          digitScale,
          share > 0.5 ? WHITE : DARK,
        );
      }
    }
    if (cell >= 14) {
      drawNumber(
        picture,
        t,
        4,
        labelSpace + t * cell + Math.floor((cell - 5 * digitScale) / 2),
        digitScale,
        DARK,
      );
      drawNumber(
        picture,
        t,
        labelSpace + t * cell + Math.floor((cell - 3 * digitScale) / 2) - 2,
        4,
        digitScale,
        DARK,
      );
    }
  }
  return picture;
}
