/**
 * The self-supervised objectives: their configuration (kinds, METHOD.md's defaults, the negative
 * deputy's rank window) and their composition from kernels on the GPU: the truncated triplet loss
 * of METHOD.md and its deputy variants, plus the BYOL and InfoNCE (SimCLR) baselines. One
 * direction of the triplet loss is: normalise -> S = P_hat Z_hat^T -> sort each row's negatives by
 * distance -> hinge on the window's mean distance -> gradient to p_hat -> back through the
 * normalisation. Losses land in a small GPU tensor, so a training step never waits for a
 * read-back.
 */
import type { Gpu, Tensor } from "../runtime/gpu.ts";
import { l2normBackward, l2normForward } from "../kernels/l2norm.ts";
import { cosineSimilarity, matmul } from "../kernels/matmul.ts";
import { reduceAll } from "../kernels/reduce.ts";
import { sortRows } from "../kernels/sort.ts";
import {
  checkTripletWindow,
  tripletBackward,
  tripletForward,
  type TripletParams,
} from "../kernels/triplet.ts";
import { byolBackward, byolForward } from "../kernels/byol.ts";
import { infoNceBackward, infoNceForward } from "../kernels/infonce.ts";

/** Every objective: the triplet family (by negative deputy), BYOL, and InfoNCE. */
export const LOSS_KINDS = ["triplet", "rank-k", "median", "hardest", "byol", "infonce"] as const;

/** Which objective (one of {@link LOSS_KINDS}). */
export type LossKind = typeof LOSS_KINDS[number];

/** An objective and its hyper-parameters (unset ones take METHOD.md's values). */
export interface LossConfig {
  kind: LossKind;
  /** "triplet": the 1-based rank window averaged into the deputy (default [2, 10]). */
  window?: [number, number];
  /** "rank-k": the rank of the single deputy negative (required). */
  k?: number;
  /** Triplet family: the hinge margin M (default 100, which never clips). */
  margin?: number;
  /** Triplet family: the weight of the positive distance (default 2). */
  gamma?: number;
  /** InfoNCE: the softmax temperature tau (default 0.1). */
  temperature?: number;
}

/** METHOD.md's defaults. */
export const LOSS_DEFAULTS = {
  window: [2, 10] as [number, number],
  margin: 100,
  gamma: 2,
  temperature: 0.1,
} as const;

/**
 * The rank window [first, last] (1-based, among the n - 1 negatives sorted ascending) a
 * triplet-family config averages. The median of m = n - 1 negatives is rank (m + 1) / 2 when m is
 * odd and the mean of ranks m/2 and m/2 + 1 when m is even (the usual median of an even count).
 */
export function deputyWindow(config: LossConfig, batch: number): [number, number] {
  const negatives = batch - 1;
  switch (config.kind) {
    case "triplet":
      return config.window ?? LOSS_DEFAULTS.window;
    case "rank-k":
      if (config.k === undefined) throw new Error('loss "rank-k" needs k (the deputy rank)');
      return [config.k, config.k];
    case "hardest":
      return [1, 1];
    case "median":
      if (negatives < 1) throw new Error(`loss "median" needs a batch of at least 2, got ${batch}`);
      return negatives % 2 === 1
        ? [(negatives + 1) / 2, (negatives + 1) / 2]
        : [negatives / 2, negatives / 2 + 1];
    default:
      throw new Error(`loss "${config.kind}" has no negative deputy window`);
  }
}

const TRIPLET_FAMILY: readonly LossKind[] = ["triplet", "rank-k", "median", "hardest"];

/** One objective for a fixed batch size and embedding width, with its GPU workspace. */
export class SslLoss {
  readonly config: LossConfig;
  readonly batch: number;
  readonly dim: number;
  /** Triplet family: the hinge parameters, with the deputy's rank window resolved. */
  readonly triplet?: TripletParams;
  private workspace: Tensor[] = [];

  constructor(private gpu: Gpu, config: LossConfig, batch: number, dim: number) {
    if (!Number.isInteger(batch) || batch < 1 || !Number.isInteger(dim) || dim < 1) {
      throw new Error(`SslLoss: batch ${batch} and dim ${dim} must be positive integers`);
    }
    this.config = config;
    this.batch = batch;
    this.dim = dim;
    if (TRIPLET_FAMILY.includes(config.kind)) {
      if (batch < 2) {
        throw new Error(`SslLoss: a triplet loss needs a batch of at least 2, got ${batch}`);
      }
      const window = deputyWindow(config, batch);
      checkTripletWindow(window, batch);
      this.triplet = {
        window,
        gamma: config.gamma ?? LOSS_DEFAULTS.gamma,
        margin: config.margin ?? LOSS_DEFAULTS.margin,
      };
    } else if (config.kind === "infonce") {
      const temperature = config.temperature ?? LOSS_DEFAULTS.temperature;
      if (!(temperature > 0)) {
        throw new Error(`SslLoss: temperature must be > 0, got ${temperature}`);
      }
    } else if (config.kind !== "byol") {
      throw new Error(`SslLoss: unknown loss kind "${config.kind}"`);
    }
  }

  /**
   * One direction of a directional loss (triplet family, BYOL): online predictions p (raw) [n, d]
   * against target projections z (raw) [n, d]. Writes the loss to lossOut[lossIndex] and dL/dp
   * into dp (overwritten); z gets no gradient.
   */
  direction(p: Tensor, z: Tensor, dp: Tensor, lossOut: Tensor, lossIndex: number): void {
    if (this.config.kind === "infonce") {
      throw new Error(
        "SslLoss.direction: InfoNCE is symmetric in the views; call infoNce(a, b, ...)",
      );
    }
    for (const [name, t] of [["p", p], ["z", z], ["dp", dp]] as const) this.checkEmbedding(name, t);
    this.checkLossSlot(lossOut, lossIndex);
    const gpu = this.gpu;
    const w = this.directionWorkspace();
    l2normForward(gpu, p, w.pHat, w.pNorms);
    l2normForward(gpu, z, w.zHat, w.zNorms);
    if (this.triplet) {
      cosineSimilarity(gpu, w.pHat, w.zHat, w.similarity!);
      // Keys -2 S are the distances, exactly; the masked diagonal (the positive) ranks last.
      sortRows(gpu, w.similarity!, w.sortedDistances!, w.sortedIndex!, {
        keyScale: -2,
        maskDiagonal: true,
      });
      tripletForward(gpu, w.similarity!, w.sortedDistances!, w.rowLoss, w.active!, this.triplet);
      tripletBackward(gpu, w.zHat, w.sortedIndex!, w.active!, w.dpHat, this.triplet);
    } else {
      byolForward(gpu, w.pHat, w.zHat, w.rowLoss);
      byolBackward(gpu, w.zHat, w.dpHat);
    }
    // Row losses are already divided by n: their sum is the mean.
    reduceAll(gpu, w.rowLoss, "sum", lossOut, lossIndex);
    l2normBackward(gpu, w.pHat, w.pNorms, w.dpHat, dp);
  }

  /**
   * InfoNCE / NT-Xent over both views' embeddings a, b (raw) [n, d]: 2n rows, each row's positive
   * is its pair in the other view, the other 2n - 2 rows are negatives. Writes the loss to
   * lossOut[lossIndex] and the gradients of both views into da, db (overwritten).
   */
  infoNce(a: Tensor, b: Tensor, da: Tensor, db: Tensor, lossOut: Tensor, lossIndex: number): void {
    if (this.config.kind !== "infonce") {
      throw new Error(`SslLoss.infoNce: this loss is "${this.config.kind}"; call direction(...)`);
    }
    for (const [name, t] of [["a", a], ["b", b], ["da", da], ["db", db]] as const) {
      this.checkEmbedding(name, t);
    }
    this.checkLossSlot(lossOut, lossIndex);
    const gpu = this.gpu;
    const n = this.batch;
    const temperature = this.config.temperature ?? LOSS_DEFAULTS.temperature;
    const w = this.infoNceWorkspace();
    // Both views' unit rows stacked as E = [a_hat; b_hat], so S = E E^T holds every pair.
    l2normForward(gpu, a, w.embeddings, w.norms);
    l2normForward(gpu, b, w.embeddings, w.norms, { rowOffset: n });
    matmul(gpu, w.embeddings, w.embeddings, w.similarity, { transposeB: true });
    infoNceForward(gpu, w.similarity, w.rowLoss, w.logSumExp, temperature);
    reduceAll(gpu, w.rowLoss, "sum", lossOut, lossIndex);
    infoNceBackward(gpu, w.similarity, w.logSumExp, w.gradSimilarity, temperature);
    // dL/dE = G E with G = dL/dS symmetrised.
    matmul(gpu, w.gradSimilarity, w.embeddings, w.gradEmbeddings);
    l2normBackward(gpu, w.embeddings, w.norms, w.gradEmbeddings, da);
    l2normBackward(gpu, w.embeddings, w.norms, w.gradEmbeddings, db, { rowOffset: n });
  }

  /** Return the workspace buffers to the pool. */
  release(): void {
    for (const t of this.workspace) t.release();
    this.workspace = [];
    this.directionBuffers = undefined;
    this.infoNceBuffers = undefined;
  }

  private directionBuffers?: ReturnType<SslLoss["makeDirectionWorkspace"]>;
  private infoNceBuffers?: ReturnType<SslLoss["makeInfoNceWorkspace"]>;

  private directionWorkspace() {
    this.directionBuffers ??= this.makeDirectionWorkspace();
    return this.directionBuffers;
  }

  private infoNceWorkspace() {
    this.infoNceBuffers ??= this.makeInfoNceWorkspace();
    return this.infoNceBuffers;
  }

  private track(t: Tensor): Tensor {
    this.workspace.push(t);
    return t;
  }

  private makeDirectionWorkspace() {
    const [n, dim] = [this.batch, this.dim];
    const empty = (shape: number[], label: string, dtype: "f32" | "u32" = "f32") =>
      this.track(this.gpu.empty(shape, dtype, label));
    // Only the ranks up to the window's end are kept from each sorted row.
    const kept = this.triplet?.window[1] ?? 0;
    return {
      pHat: empty([n, dim], "p_hat"),
      zHat: empty([n, dim], "z_hat"),
      pNorms: empty([n], "|p|"),
      zNorms: empty([n], "|z|"),
      rowLoss: empty([n], "row losses"),
      dpHat: empty([n, dim], "dL/dp_hat"),
      similarity: this.triplet ? empty([n, n], "similarity") : undefined,
      sortedDistances: this.triplet ? empty([n, kept], "sorted distances") : undefined,
      sortedIndex: this.triplet ? empty([n, kept], "sorted indices", "u32") : undefined,
      active: this.triplet ? empty([n], "hinge active") : undefined,
    };
  }

  private makeInfoNceWorkspace() {
    const [n, dim] = [this.batch, this.dim];
    const empty = (shape: number[], label: string) =>
      this.track(this.gpu.empty(shape, "f32", label));
    return {
      embeddings: empty([2 * n, dim], "E = [a_hat; b_hat]"),
      norms: empty([2 * n], "|a|, |b|"),
      similarity: empty([2 * n, 2 * n], "E E^T"),
      gradSimilarity: empty([2 * n, 2 * n], "dL/dS"),
      rowLoss: empty([2 * n], "row losses"),
      logSumExp: empty([2 * n], "logsumexp"),
      gradEmbeddings: empty([2 * n, dim], "dL/dE"),
    };
  }

  private checkEmbedding(name: string, t: Tensor): void {
    if (t.shape.length !== 2 || t.shape[0] !== this.batch || t.shape[1] !== this.dim) {
      throw new Error(`SslLoss: ${name} must be [${this.batch}, ${this.dim}], got [${t.shape}]`);
    }
  }

  private checkLossSlot(lossOut: Tensor, lossIndex: number): void {
    if (!Number.isInteger(lossIndex) || lossIndex < 0 || lossIndex >= lossOut.size) {
      throw new Error(`SslLoss: lossIndex ${lossIndex} outside lossOut [${lossOut.shape}]`);
    }
  }
}
