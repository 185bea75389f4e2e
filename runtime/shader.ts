/**
 * Kernel sources and pipelines: reading `kernels/<file>.wgsl`, `{{KEY}}` specialisation, the
 * compiled-pipeline cache, and each kernel file's named storage bindings.
 *
 * Binding convention shared by every kernel in `kernels/`:
 * - `@group(0) @binding(0)` is a `var<uniform>` of small per-dispatch parameters (when the kernel
 *   takes any); storage buffers and textures follow at bindings 1, 2, ..., named once per file by
 *   {@link kernelFile} and bound by name at each dispatch.
 */

/**
 * A WGSL file and the names of its storage bindings in binding order: entry i is
 * `@binding(i + 1)`; `null` marks a binding number the file leaves unused.
 */
export interface KernelFile<Name extends string = string> {
  /** `kernels/<file>.wgsl` without the extension. */
  readonly file: string;
  readonly bindings: readonly (Name | null)[];
}

/** Declare a kernel file's storage bindings once, in the WGSL's binding order (1, 2, ...). */
export function kernelFile<const Name extends string>(
  file: string,
  bindings: readonly (Name | null)[],
): KernelFile<Name> {
  const seen = new Set<string>();
  for (const name of bindings) {
    if (name === null) continue;
    if (seen.has(name)) throw new Error(`kernels/${file}.wgsl: binding "${name}" named twice`);
    seen.add(name);
  }
  return { file, bindings };
}

/** A compiled compute pipeline with the name used in error messages and its binding names. */
export interface Kernel<Name extends string = string> {
  /** `<file>:<entry point>`. */
  name: string;
  pipeline: GPUComputePipeline;
  bindings: readonly (Name | null)[];
}

/** Options to specialise a kernel. */
export interface KernelOptions {
  /** Entry point (default `main`). */
  entryPoint?: string;
  /** Values for WGSL `override` declarations. */
  constants?: Record<string, number>;
  /**
   * Textual substitution for things `override` cannot express (workgroup array sizes in old
   * compilers, types): every `{{KEY}}` in the source becomes the value.
   */
  substitute?: Record<string, string | number>;
}

/**
 * Compiles each (file, entry point, constants, substitution) once. `guard` wraps the device calls
 * (the device puts them in a validation error scope when it validates).
 */
export class PipelineCache {
  private pipelines = new Map<string, Kernel>();
  private modules = new Map<string, GPUShaderModule>();

  constructor(
    private device: GPUDevice,
    private guard: (what: string, compile: () => void) => void,
  ) {}

  get<Name extends string>(source: KernelFile<Name>, options: KernelOptions = {}): Kernel<Name> {
    const { file } = source;
    const entryPoint = options.entryPoint ?? "main";
    const key = `${file}|${entryPoint}|${JSON.stringify(options.constants ?? {})}|${
      JSON.stringify(options.substitute ?? {})
    }`;
    const cached = this.pipelines.get(key);
    if (cached) {
      if (cached.bindings !== source.bindings && !sameBindings(cached.bindings, source.bindings)) {
        throw new Error(`kernels/${file}.wgsl is declared twice with different binding tables`);
      }
      return cached as Kernel<Name>;
    }
    const code = specialise(loadKernelSource(file), options.substitute ?? {});
    const moduleKey = `${file}|${JSON.stringify(options.substitute ?? {})}`;
    const name = `${file}:${entryPoint}`;
    let pipeline: GPUComputePipeline | undefined;
    this.guard(`compiling kernel ${name}`, () => {
      let module = this.modules.get(moduleKey);
      if (!module) {
        module = this.device.createShaderModule({ label: file, code });
        this.modules.set(moduleKey, module);
      }
      pipeline = this.device.createComputePipeline({
        label: name,
        layout: "auto",
        compute: { module, entryPoint, constants: options.constants },
      });
    });
    const kernel: Kernel<Name> = { name, pipeline: pipeline!, bindings: source.bindings };
    this.pipelines.set(key, kernel);
    return kernel;
  }
}

function sameBindings(a: readonly (string | null)[], b: readonly (string | null)[]): boolean {
  return a.length === b.length && a.every((name, i) => name === b[i]);
}

const sourceCache = new Map<string, string>();

/** Read `kernels/<file>.wgsl` (cached). */
export function loadKernelSource(file: string): string {
  let source = sourceCache.get(file);
  if (source === undefined) {
    const url = new URL(`../kernels/${file}.wgsl`, import.meta.url);
    try {
      source = Deno.readTextFileSync(url);
    } catch (e) {
      throw new Error(`kernel source kernels/${file}.wgsl not found: ${(e as Error).message}`);
    }
    sourceCache.set(file, source);
  }
  return source;
}

/** Replace every `{{KEY}}` in a WGSL source; an unknown placeholder is an error. */
export function specialise(source: string, values: Record<string, string | number>): string {
  const out = source.replace(/\{\{(\w+)\}\}/g, (_, key: string) => {
    if (!(key in values)) throw new Error(`WGSL placeholder {{${key}}} has no value`);
    return String(values[key]);
  });
  return out;
}
