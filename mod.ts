/**
 * tritrain: self-supervised ResNet pretraining with the truncated triplet loss (Wang et al.,
 * "Solving Inefficiency of Self-supervised Representation Learning", ICCV 2021), with every
 * kernel hand-written in WGSL and run through WebGPU.
 *
 * Layers, bottom to top: runtime (device, tensors, dispatch) -> kernels (one WGSL family each)
 * -> models (layers, ResNets, heads, the SSL pair, optimizers, checkpoints, evaluation) -> data
 * (datasets, GPU augmentation, prefetching loader). The command-line tasks live in `tasks/`.
 *
 * @example
 * ```ts
 * import { acquireGpu, SslModel, scaledWidths } from "./mod.ts";
 * const gpu = await acquireGpu({ log: true });
 * const model = new SslModel(gpu, {
 *   backbone: { arch: "resnet18", inChannels: 3, smallImage: true, widths: scaledWidths(0.5) },
 *   projectorHidden: 512, projectorOut: 128, predictorHidden: 512,
 *   loss: { kind: "triplet", window: [2, 10] },
 * }, 128, 0, { momentum: 0.9, weightDecay: 1e-6, eta: 0.001 });
 * ```
 * @module
 */

// ---- runtime ----
/** The WebGPU device with the adapter's maximum limits, tensors, dispatch and readback. */
export {
  acquireGpu,
  type AcquireOptions,
  BufferPool,
  ceilDiv,
  createGpu,
  DEFAULT_KERNEL_SETTINGS,
  type DispatchArgs,
  type DispatchObserver,
  type DType,
  Gpu,
  grid1d,
  type Kernel,
  KERNEL_PLAN_ENV,
  type KernelFile,
  kernelFile,
  type KernelOptions,
  type KernelSettings,
  loadKernelSource,
  packUniforms,
  PLAN_KINDS,
  type PlanKind,
  shapeSize,
  specialise,
  Tensor,
} from "./runtime/gpu.ts";
/** Per-kernel GPU times of the work between `start` and `stop` (timestamps or sync replay). */
export { KernelProfiler, type ProfileReport } from "./runtime/profiler.ts";
/** Seeded pseudo-random numbers (initialisation, tests). */
export { Rng } from "./runtime/random.ts";

/** MPI (MPICH ABI) through Deno.dlopen: all-reduce, broadcast, barrier; nothing loads at import. */
export { type Collective, LocalCollective, MPI_LIBRARY, MpiError, openMpi } from "./runtime/mpi.ts";

// ---- kernels ----
/** Elementwise ops: fill, copy, add, scale, axpy, axpby, ReLU forward/backward. */
export {
  add,
  axpby,
  axpy,
  copy,
  fill,
  reluBackward,
  reluForward,
  scale,
} from "./kernels/elementwise.ts";
/** Deterministic row and whole-tensor sums, sums of squares and norms. */
export { reduceAll, reduceRows } from "./kernels/reduce.ts";
/** Tiled matrix multiply in the forms a Linear layer needs (A·B, Aᵀ·B, A·Bᵀ, bias, batched). */
export { matmul, type MatmulOptions, matmulShape } from "./kernels/matmul.ts";
/** Implicit-GEMM convolution: forward, input gradient, weight gradient (split-K), bias gradient. */
export {
  conv2dBiasGrad,
  conv2dForward,
  conv2dInputGrad,
  conv2dOutputSize,
  type Conv2dShape,
  conv2dWeightGrad,
} from "./kernels/conv2d.ts";
/** BatchNorm over [rows, C] (2d on NHWC, 1d on [N, C]): train, eval, backward; ReLU and a
 * residual add fusable. */
export {
  batchNormBackward,
  batchNormEvalForward,
  type BatchNormShape,
  batchNormTrainForward,
  type ForwardOptions as BatchNormForwardOptions,
} from "./kernels/batchnorm.ts";
/** Max pool (argmax saved) and global average pool, forward and backward. */
export {
  globalAvgPoolBackward,
  globalAvgPoolForward,
  maxPoolBackward,
  maxPoolForward,
  maxPoolOutputSize,
  type MaxPoolWindow,
  type PoolShape,
} from "./kernels/pool.ts";
/** Residual add + ReLU (the end of a ResNet block), its backward, and the masked gradient join. */
export { addMasked, addRelu, addReluBackward } from "./kernels/residual.ts";
/** Row L2 normalisation forward/backward (eps 1e-12). */
export { l2normBackward, l2normForward } from "./kernels/l2norm.ts";
/** Stable per-row bitonic sort carrying indices (ranks each row's negatives). */
export { maxSortTile, type SortOptions, sortRows } from "./kernels/sort.ts";
/** S = P_hat Z_hat^T: cosines between unit rows (the GEMM behind the SSL losses). */
export { cosineSimilarity } from "./kernels/matmul.ts";
/** EMA of the target network (per tensor, or flat buffers in one dispatch) (the momentum schedule:
 * models/schedule.ts). */
export { emaUpdate, emaUpdateFlat } from "./kernels/ema.ts";
/** LARS (METHOD.md; per tensor, or every tensor of flat buffers in one dispatch) and SGD with
 * momentum, as in-place WGSL updates. */
export {
  type LarsHyperParameters,
  type LarsOptions,
  LarsSegments,
  larsStep,
  larsStepFlat,
  type SgdOptions,
  sgdStep,
  type TensorSegment,
} from "./kernels/optimizer.ts";
/** Weighted kNN vote (the kNN monitor). */
export { type KnnCandidates, knnMerge, knnScores, knnVote } from "./kernels/knn.ts";
/** Softmax cross-entropy with its gradient (linear probe). */
export { softmaxCrossEntropy } from "./kernels/softmax_xent.ts";

// ---- models ----
/** Layers with explicit forward/backward and the activation arena. */
export {
  BatchNorm,
  Context,
  Conv2d,
  type FlatLayout,
  type FlatParameters,
  flattenParameters,
  type FlatTensors,
  flattenStates,
  flatZeros,
  GlobalAvgPool,
  isLayoutPrefix,
  Linear,
  type LinearInit,
  MaxPool,
  type Mode,
  type Module,
  type Parameter,
  type StateTensor,
  zeroGrads,
} from "./models/layers.ts";
/** torchvision-structured ResNet-18/34/50 with torchvision parameter names. */
export {
  type Arch,
  ARCHITECTURES,
  parameterCount,
  ResNet,
  type ResNetConfig,
  scaledWidths,
} from "./models/resnet.ts";
/** Projector / predictor MLPs. */
export { type HeadInit, linearInit, Mlp, type MlpConfig } from "./models/heads.ts";
/** The SSL objectives: truncated triplet (smoothed rank-k, rank-k, median, hardest), BYOL, InfoNCE. */
export {
  deputyWindow,
  LOSS_DEFAULTS,
  LOSS_KINDS,
  type LossConfig,
  type LossKind,
  SslLoss,
} from "./models/loss.ts";
/** The online/target pair and its training step (loss, backward, LARS, EMA). */
export {
  Branch,
  type LarsConfig,
  type MicroBatch,
  SslModel,
  type SslModelConfig,
  sslModelConfig,
  type SslModelOptions,
  type SslRecipe,
} from "./models/ssl.ts";
/** The smallest rank k whose negative deputy is a false negative with probability <= epsilon. */
export { bernoulliK, binomialTail } from "./models/bernoulli.ts";
/** A run's schedule: steps, warm-up + cosine learning rate (two shapes), EMA momentum. */
export {
  learningRateAt,
  LR_SHAPES,
  type LrShape,
  momentumAt,
  releasedLearningRateAt,
  Schedule,
  type ScheduleConfig,
} from "./models/schedule.ts";
/** Per-step losses kept on the GPU, read back in batches, NaN stop, metrics.jsonl. */
export { DivergedError, type MetricsLine, TrainingLog } from "./models/training_log.ts";
/** Data-parallel training: gradients averaged over MPI ranks between backward and update. */
export {
  assertSameConfig,
  broadcastText,
  GradientSync,
  type GradientSyncOptions,
  type SyncResult,
} from "./models/data_parallel.ts";
/** Activation memory estimate and the largest batch that fits. */
export { checkBatchFits, estimateStepMemory } from "./models/memory.ts";
/** safetensors checkpoints with torchvision names (atomic writes). */
export {
  hwioToOihw,
  loadCheckpoint,
  oihwToHwio,
  readCheckpoint,
  saveCheckpoint,
} from "./models/checkpoint.ts";
export { loadSafetensors, saveSafetensors, writeFileAtomic } from "./models/safetensors.ts";
/** Rebuild a trained backbone from a checkpoint. */
export { loadBackbone } from "./models/load.ts";
/** kNN monitor, linear probe and feature extraction. */
export {
  evaluateBackbone,
  type EvaluationOptions,
  type EvaluationResult,
  extractFeatures,
  FeatureSet,
  type FlatFeatures,
  knnAccuracy,
  knnClassify,
  type KnnOptions,
  linearProbe,
} from "./models/evaluate.ts";
/** What a backbone learned: kNN predictions, confusion matrix, cosine retrieval, t-SNE map. */
export {
  confusionMatrix,
  type Insight,
  type InsightOptions,
  inspectBackbone,
  nearestNeighbours,
  perClassAccuracy,
  retrievalQueries,
  tsne,
  type TsneOptions,
} from "./models/insight.ts";
/** Backbone export for PyTorch: the weights alone and a generated torch-only Python module. */
export {
  backboneLayout,
  backboneTensors,
  pytorchModuleSource,
  writeBackboneExport,
} from "./models/export.ts";

// ---- data ----
/** Datasets (Fashion-MNIST, MNIST, CIFAR-10/100, image folders) and the per-epoch shuffle. */
export {
  type CropRequest,
  type Dataset,
  DatasetError,
  type DatasetName,
  loadDataset,
  shuffledOrder,
} from "./data/dataset.ts";
/** An in-memory dataset (tests, custom data). */
export { ArrayDataset } from "./data/memory.ts";
/** Two-view GPU augmentation (METHOD.md), its configurations and its GPU memory plan. */
export { Augmenter, augmentTensors, uploadPixels } from "./data/augment.ts";
/** The crop settings of a view that an image folder's decode workers apply. */
export { cropViewSpec } from "./data/folder_decode.ts";
export { augmentConfigFor, imagenetViews, smallDataViews } from "./data/augment_config.ts";
/** Pictures of what was learned (retrieval grid, embedding map, confusion matrix) as RGB. */
export {
  drawConfusionMatrix,
  drawEmbeddingMap,
  drawRetrievalGrid,
  retrievalRows,
  type RgbPicture,
} from "./data/pictures.ts";
/**
 * Prefetching batch loader (next batch loaded, uploaded and augmented during the current step);
 * `BatchLoader.forTraining` hands out an optimizer step's micro-batches (one rank's share).
 */
export {
  type Batch,
  BatchLoader,
  type StepBatches,
  type TrainingLoaderOptions,
} from "./data/loader.ts";
