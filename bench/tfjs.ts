/**
 * The benchmark peer: TensorFlow.js with its WebGPU backend, on the same WebGPU implementation
 * Deno gives our runtime (DENO_WEBGPU_BACKEND=vulkan selects lavapipe on a CPU-only machine).
 * Used only by `bench/`; the library itself never imports tfjs.
 */
// Bare specifiers resolve through package.json (node_modules); `deno lint` rejects inline `npm:`.
// Only the types are imported up front: tfjs itself loads on first use, so `bench --no-tfjs`
// runs where tfjs is not installed (bench/device-check.sh on a machine that carries no
// node_modules/@tensorflow).
import type * as TfjsModule from "@tensorflow/tfjs";

/** The tfjs namespace type. */
export type Tfjs = typeof TfjsModule;

let loaded: Promise<Tfjs> | undefined;

/** tfjs with the "webgpu" backend active and ready (initialised once per process). */
export function loadTfjs(): Promise<Tfjs> {
  loaded ??= initialise();
  loaded.catch(() => loaded = undefined);
  return loaded;
}

async function initialise(): Promise<Tfjs> {
  try {
    // The Vulkan loader warns without a runtime dir (runtime/device.ts does the same).
    if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", "/tmp");
  } catch {
    // No env permission: the warning is harmless.
  }
  if (typeof navigator === "undefined" || !("gpu" in navigator)) {
    throw new Error("tfjs peer: WebGPU is not available (run with --unstable-webgpu)");
  }
  const tf: Tfjs = await import("@tensorflow/tfjs");
  // Importing the backend registers "webgpu" (only when `navigator.gpu` exists, as in Deno with
  // --unstable-webgpu). Its factory requests the adapter the same way `runtime/device.ts` does
  // (powerPreference "high-performance"), so both sides run on the same adapter; each gets its own
  // GPUDevice, as two independent libraries would.
  await import("@tensorflow/tfjs-backend-webgpu");
  // tfjs-core probes for a browser or Node; Deno is neither, and that is fine: without `window`
  // or `process` it picks no platform-specific code paths we use here (no fetch/IO handlers are
  // needed for matMul/conv2d), and the webgpu backend only touches OffscreenCanvas when importing
  // from or exporting to canvases, which the benchmarks never do. So no globals are shimmed.
  // Production mode skips tfjs's debug-only checks (NaN scans etc.), as a deployed app would.
  tf.env().set("PROD", true);
  const ok = await tf.setBackend("webgpu");
  if (!ok) throw new Error("tfjs peer: could not initialise the webgpu backend");
  await tf.ready();
  if (tf.getBackend() !== "webgpu") {
    throw new Error(`tfjs peer: backend is ${tf.getBackend()}, expected webgpu`);
  }
  return tf;
}

/**
 * Submit tfjs's pending GPU work and wait until it is done (no readback, like our `gpu.sync()`).
 * tfjs keeps one compute pass open across dispatches and its `submitQueue()` does not end it;
 * finishing an encoder with a pass open makes an invalid command buffer whose work is silently
 * dropped (a timing then measures only the encoding, and results read back as zeros), so the
 * pass is ended first, as tfjs itself does before a readback.
 */
export async function syncTfjs(tf: Tfjs): Promise<void> {
  const backend = tf.backend() as unknown as {
    commandEncoder: GPUCommandEncoder | null;
    endComputePassEncoder(): void;
    submitQueue(): void;
    device: GPUDevice;
  };
  if (backend.commandEncoder) {
    backend.endComputePassEncoder();
    backend.submitQueue();
  }
  await backend.device.queue.onSubmittedWorkDone();
}
