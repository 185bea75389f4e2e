/**
 * The WebGPU runtime in one import: the device (adapter, limits, error scopes, dispatch,
 * readback; `device.ts`), tensors and the buffer pool (`tensor.ts`), operand textures
 * (`texture.ts`), and kernel sources, specialisation, named bindings and the pipeline cache
 * (`shader.ts`). Knows nothing about neural networks.
 */
export {
  acquireGpu,
  type AcquireOptions,
  type Bindable,
  type BindingResource,
  ceilDiv,
  createGpu,
  DEFAULT_KERNEL_SETTINGS,
  type DispatchArgs,
  type DispatchEvent,
  type DispatchObserver,
  Gpu,
  grid1d,
  KERNEL_PLAN_ENV,
  type KernelSettings,
  type OperandSource,
  packUniforms,
  parsePlanKind,
  PLAN_KINDS,
  type PlanKind,
  resolvePlanKind,
  type TileStaging,
} from "./device.ts";
export { BufferPool, type DType, shapeSize, Tensor } from "./tensor.ts";
export { OPERAND_TEXTURE_WIDTH, type OperandTexture, TexturePool } from "./texture.ts";
export {
  type Kernel,
  type KernelFile,
  kernelFile,
  type KernelOptions,
  loadKernelSource,
  specialise,
} from "./shader.ts";
