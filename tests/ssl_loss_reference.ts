/**
 * Float64 references for the SSL objectives (METHOD.md "The loss"), written straight from the
 * formulas, for the kernel and composition tests. Inputs are raw (un-normalised) row-major [n, d].
 */

/** Rows divided by their L2 norms (clamped at 1e-12), and the norms. */
export function normalizeRows(x: ArrayLike<number>, n: number, d: number) {
  const y = new Float64Array(n * d);
  const norms = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let sumsq = 0;
    for (let c = 0; c < d; c++) sumsq += x[i * d + c] ** 2;
    norms[i] = Math.sqrt(sumsq);
    for (let c = 0; c < d; c++) y[i * d + c] = x[i * d + c] / Math.max(norms[i], 1e-12);
  }
  return { y, norms };
}

/** dx = (I - y y^T) dy / max(|x|, 1e-12) per row. */
export function normalizeBackward(
  y: Float64Array,
  norms: Float64Array,
  dy: Float64Array,
  n: number,
  d: number,
): Float64Array {
  const dx = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    let dot = 0;
    for (let c = 0; c < d; c++) dot += y[i * d + c] * dy[i * d + c];
    for (let c = 0; c < d; c++) {
      dx[i * d + c] = (dy[i * d + c] - y[i * d + c] * dot) / Math.max(norms[i], 1e-12);
    }
  }
  return dx;
}

/** S = A B^T for unit rows. */
export function similarity(a: Float64Array, b: Float64Array, n: number, m: number, d: number) {
  const s = new Float64Array(n * m);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      let dot = 0;
      for (let c = 0; c < d; c++) dot += a[i * d + c] * b[j * d + c];
      s[i * m + j] = dot;
    }
  }
  return s;
}

/** Hyper-parameters of the triplet reference. */
export interface TripletReferenceParams {
  window: [number, number];
  gamma: number;
  margin: number;
}

/**
 * Triplet loss from the cosine matrix S [n, n] and unit targets z_hat: the loss, each row's window
 * (columns, in rank order), the hinge mask and dL/dp_hat. Negatives rank by (distance, column).
 */
export function tripletFromSimilarity(
  s: ArrayLike<number>,
  zHat: ArrayLike<number>,
  n: number,
  d: number,
  params: TripletReferenceParams,
) {
  const [first, last] = params.window;
  const size = last - first + 1;
  const windows: number[][] = [];
  const active: boolean[] = [];
  const dpHat = new Float64Array(n * d);
  let loss = 0;
  for (let i = 0; i < n; i++) {
    const distance = (j: number) => -2 * s[i * n + j];
    const negatives = Array.from({ length: n }, (_, j) => j).filter((j) => j !== i);
    negatives.sort((a, b) => distance(a) - distance(b) || a - b);
    const window = negatives.slice(first - 1, last);
    windows.push(window);
    const deputy = window.reduce((sum, j) => sum + distance(j), 0) / size;
    const hinge = params.gamma * distance(i) - deputy + params.margin;
    active.push(hinge > 0);
    loss += Math.max(0, hinge) / n;
    if (hinge > 0) {
      for (let c = 0; c < d; c++) {
        let sum = 0;
        for (const j of window) sum += zHat[j * d + c];
        dpHat[i * d + c] = (-2 * params.gamma * zHat[i * d + c] + (2 / size) * sum) / n;
      }
    }
  }
  return { loss, windows, active, dpHat };
}

/** One direction of the triplet loss from raw p, z: loss and dL/dp. */
export function tripletReference(
  p: ArrayLike<number>,
  z: ArrayLike<number>,
  n: number,
  d: number,
  params: TripletReferenceParams,
) {
  const pn = normalizeRows(p, n, d);
  const zn = normalizeRows(z, n, d);
  const s = similarity(pn.y, zn.y, n, n, d);
  const result = tripletFromSimilarity(s, zn.y, n, d, params);
  return { ...result, dp: normalizeBackward(pn.y, pn.norms, result.dpHat, n, d) };
}

/** BYOL: mean_i (2 - 2 cos(p_i, z_i)) and dL/dp. */
export function byolReference(p: ArrayLike<number>, z: ArrayLike<number>, n: number, d: number) {
  const pn = normalizeRows(p, n, d);
  const zn = normalizeRows(z, n, d);
  let loss = 0;
  const dpHat = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    let dot = 0;
    for (let c = 0; c < d; c++) dot += pn.y[i * d + c] * zn.y[i * d + c];
    loss += (2 - 2 * dot) / n;
    for (let c = 0; c < d; c++) dpHat[i * d + c] = -2 * zn.y[i * d + c] / n;
  }
  return { loss, dp: normalizeBackward(pn.y, pn.norms, dpHat, n, d) };
}

/** NT-Xent over E = [a_hat; b_hat] with temperature tau: loss, da, db. */
export function infoNceReference(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  n: number,
  d: number,
  tau: number,
) {
  const width = 2 * n;
  const raw = new Float64Array(width * d);
  raw.set(Array.from(a), 0);
  raw.set(Array.from(b), n * d);
  const e = normalizeRows(raw, width, d);
  const s = similarity(e.y, e.y, width, width, d);
  const gradS = new Float64Array(width * width);
  let loss = 0;
  for (let r = 0; r < width; r++) {
    const positive = (r + n) % width;
    let max = -Infinity;
    for (let j = 0; j < width; j++) if (j !== r) max = Math.max(max, s[r * width + j] / tau);
    let sum = 0;
    for (let j = 0; j < width; j++) if (j !== r) sum += Math.exp(s[r * width + j] / tau - max);
    const lse = max + Math.log(sum);
    loss += (lse - s[r * width + positive] / tau) / width;
    for (let j = 0; j < width; j++) {
      if (j === r) continue;
      const softmax = Math.exp(s[r * width + j] / tau - lse);
      gradS[r * width + j] = (softmax - (j === positive ? 1 : 0)) / tau / width;
    }
  }
  // S_rj = e_r . e_j depends on both rows.
  const gradE = new Float64Array(width * d);
  for (let r = 0; r < width; r++) {
    for (let j = 0; j < width; j++) {
      const g = gradS[r * width + j];
      if (g === 0) continue;
      for (let c = 0; c < d; c++) {
        gradE[r * d + c] += g * e.y[j * d + c];
        gradE[j * d + c] += g * e.y[r * d + c];
      }
    }
  }
  const grad = normalizeBackward(e.y, e.norms, gradE, width, d);
  return { loss, da: grad.subarray(0, n * d), db: grad.subarray(n * d) };
}

/** Central finite differences of f at x (float64), every coordinate. */
export function finiteDifferences(
  f: (x: Float64Array) => number,
  x: ArrayLike<number>,
  h = 1e-6,
): Float64Array {
  const at = Float64Array.from(x);
  const grad = new Float64Array(at.length);
  for (let i = 0; i < at.length; i++) {
    const keep = at[i];
    at[i] = keep + h;
    const plus = f(at);
    at[i] = keep - h;
    const minus = f(at);
    at[i] = keep;
    grad[i] = (plus - minus) / (2 * h);
  }
  return grad;
}
