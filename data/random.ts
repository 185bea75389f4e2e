/**
 * Counter-based random numbers for the data pipeline: Philox4x32-10 (Salmon et al., "Parallel
 * random numbers: as easy as 1, 2, 3", SC 2011), the generator PyTorch uses on CUDA.
 *
 * A counter-based generator has no state: draw `d` of stream (key, counter) is a pure function of
 * its coordinates. So the augmentation of sample `n`, view `v` at step `s` is the same whatever
 * batch size, prefetch order or worker split produced it, and nothing has to be saved to resume.
 *
 * Streams (key = [seed, domain + sub-stream], counter = [block, a, b, c]) used by the pipeline:
 * - augmentation parameters: domain {@link DOMAIN_AUGMENT} + view, counter [block, sample, step
 *   low 32 bits, step high bits];
 * - per-branch batch rescale sizes: domain {@link DOMAIN_RESCALE}, counter [block, 0, step, ...];
 * - epoch shuffles: domain {@link DOMAIN_SHUFFLE}, counter [block, epoch, 0, 0].
 */

const PHILOX_M0 = 0xd2511f53;
const PHILOX_M1 = 0xcd9e8d57;
const PHILOX_W0 = 0x9e3779b9;
const PHILOX_W1 = 0xbb67ae85;

/** Key domain of the per-sample augmentation parameter streams (plus the view index). */
export const DOMAIN_AUGMENT = 0xa0000000;
/** Key domain of the per-branch batch rescale sizes. */
export const DOMAIN_RESCALE = 0xb0000000;
/** Key domain of the per-epoch shuffles. */
export const DOMAIN_SHUFFLE = 0xc0000000;

/** High and low 32 bits of the 64-bit product of two u32 (exact: every partial product < 2^53). */
function mulHiLo(a: number, b: number, out: Uint32Array, hiIndex: number, loIndex: number): void {
  const aLow = a & 0xffff;
  const aHigh = a >>> 16;
  const bLow = b & 0xffff;
  const bHigh = b >>> 16;
  const lowLow = aLow * bLow;
  const lowHigh = aLow * bHigh;
  const highLow = aHigh * bLow;
  const middle = (lowLow >>> 16) + (lowHigh & 0xffff) + (highLow & 0xffff);
  out[hiIndex] = aHigh * bHigh + (lowHigh >>> 16) + (highLow >>> 16) + (middle >>> 16);
  out[loIndex] = Math.imul(a, b);
}

const scratch = new Uint32Array(4);

/**
 * Philox4x32-10 of a 4-word counter under a 2-word key, written into `out` (4 words).
 * Matches Random123's known-answer vectors.
 */
export function philox4x32(
  counter: ArrayLike<number>,
  key: ArrayLike<number>,
  out: Uint32Array = new Uint32Array(4),
): Uint32Array {
  let c0 = counter[0] >>> 0;
  let c1 = counter[1] >>> 0;
  let c2 = counter[2] >>> 0;
  let c3 = counter[3] >>> 0;
  let k0 = key[0] >>> 0;
  let k1 = key[1] >>> 0;
  for (let round = 0; round < 10; round++) {
    if (round > 0) {
      k0 = (k0 + PHILOX_W0) >>> 0;
      k1 = (k1 + PHILOX_W1) >>> 0;
    }
    mulHiLo(PHILOX_M0, c0, scratch, 0, 1); // hi0, lo0
    mulHiLo(PHILOX_M1, c2, scratch, 2, 3); // hi1, lo1
    const hi0 = scratch[0], lo0 = scratch[1], hi1 = scratch[2], lo1 = scratch[3];
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
  return out;
}

/**
 * One stream of uniform draws: draw `d` comes from word `d % 4` of Philox block `d / 4`, so any
 * draw can be read without producing the ones before it. Blocks are cached one at a time.
 */
export class CounterStream {
  private readonly key: Uint32Array;
  private readonly counter = new Uint32Array(4);
  private readonly block = new Uint32Array(4);
  private cachedBlock = -1;

  /** A stream keyed by (seed, domain) at counter words (a, b, c); word 0 counts blocks. */
  constructor(seed: number, domain: number, a = 0, b = 0, c = 0) {
    this.key = Uint32Array.of(seed >>> 0, domain >>> 0);
    this.counter[1] = a >>> 0;
    this.counter[2] = b >>> 0;
    this.counter[3] = c >>> 0;
  }

  /** The raw 32-bit word of draw `d`. */
  word(d: number): number {
    const blockIndex = Math.floor(d / 4);
    if (blockIndex !== this.cachedBlock) {
      this.counter[0] = blockIndex >>> 0;
      philox4x32(this.counter, this.key, this.block);
      this.cachedBlock = blockIndex;
    }
    return this.block[d % 4];
  }

  /** Draw `d` as a uniform number in [0, 1) (32 random bits). */
  uniform(d: number): number {
    return this.word(d) / 4294967296;
  }

  /** Draw `d` as a uniform number in [lo, hi). */
  uniformIn(d: number, lo: number, hi: number): number {
    return lo + (hi - lo) * this.uniform(d);
  }

  /** Draw `d` as an integer uniform in [0, count) (like torch.randint(0, count)). */
  integer(d: number, count: number): number {
    return Math.min(Math.floor(this.uniform(d) * count), count - 1);
  }
}

/** Split a non-negative integer step into the two 32-bit counter words. */
export function stepWords(step: number): [number, number] {
  if (!Number.isInteger(step) || step < 0) throw new Error(`step must be an integer >= 0: ${step}`);
  return [step >>> 0, Math.floor(step / 4294967296) >>> 0];
}
