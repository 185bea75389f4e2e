/**
 * Collective communication between processes (data-parallel training), through the MPI C library
 * reached with `Deno.dlopen`. Nothing is loaded at import: {@link openMpi} opens the library, so a
 * run without `--distributed` never touches MPI.
 *
 * Why MPICH's ABI (`libmpich.so.12`, Debian/Ubuntu package `mpich`; Intel MPI, MVAPICH and Cray
 * MPICH share it): its handles (communicator, datatype, reduction op, error handler) are plain
 * 32-bit integers with fixed values written in `mpi.h`, so the binding passes numbers and needs no
 * C shim. Open MPI's handles are addresses of library globals, which `Deno.dlopen` cannot name
 * portably.
 *
 * Threads: all-reduce, broadcast and barrier are `nonblocking` FFI symbols (Deno runs them on a
 * worker thread and returns a promise), so the event loop keeps prefetching data while a
 * collective is in flight. MPI must then allow calls from threads other than the one that called
 * `MPI_Init_thread`: we ask for MPI_THREAD_MULTIPLE (so `abort` is legal while a collective is in
 * flight) and require at least MPI_THREAD_SERIALIZED; collectives are queued so that at most one
 * is in MPI at a time, in the order they were called (MPI requires every rank to issue
 * collectives in the same order).
 *
 * Faults (MPICH 4.0.2's mpiexec, "hydra"): a rank that throws (exit 1), calls `abort`, or is killed
 * makes mpiexec end every rank within about a second, with a non-zero exit code. A rank that ends
 * with code 0 before `finalize` would make mpiexec stop the others silently and report success, so
 * {@link openMpi} turns that case into an abort.
 */

/** A group of processes that reduce and broadcast host buffers together. */
export interface Collective {
  /** This process's index in the group, 0..size-1. */
  readonly rank: number;
  /** Number of processes in the group. */
  readonly size: number;
  /** Element-wise sum over all ranks, in place: every rank ends with the same sums. */
  allReduceSum(data: Float32Array): Promise<void>;
  /** Overwrite `data` on every rank with its contents on rank `root` (same length everywhere). */
  broadcast(data: Uint8Array | Float32Array, root: number): Promise<void>;
  /** Resolves once every rank has entered the barrier. */
  barrier(): Promise<void>;
  /** End every rank of the job now with exit code `code` (does not return). */
  abort(code: number): void;
  /** Leave the group (after the last collective); later calls throw. */
  finalize(): void;
}

/** Options for {@link openMpi}. */
export interface MpiOptions {
  /** Shared library to open (default `libmpich.so.12`, found through the loader's path). */
  library?: string;
  /** Largest piece of a buffer handed to one MPI call, in bytes (MPI counts are int32; default
   * 1 GiB). Tests set it small to exercise the chunking. */
  maxChunkBytes?: number;
}

/** The default MPI library: MPICH's ABI (see the file comment). */
export const MPI_LIBRARY = "libmpich.so.12";

// Handle values of the MPICH ABI (from MPICH 4's mpi.h; fixed by the ABI).
const MPI_SUCCESS = 0;
const MPI_COMM_WORLD = 0x44000000;
const MPI_BYTE = 0x4c00010d;
const MPI_FLOAT = 0x4c00040a;
const MPI_SUM = 0x58000003;
const MPI_ERRORS_RETURN = 0x54000001;
const MPI_THREAD_SERIALIZED = 2;
const MPI_THREAD_MULTIPLE = 3;
const MPI_MAX_ERROR_STRING = 512;
const THREAD_LEVEL_NAMES = ["SINGLE", "FUNNELED", "SERIALIZED", "MULTIPLE"];
const DEFAULT_MAX_CHUNK_BYTES = 1 << 30;

const SYMBOLS = {
  MPI_Initialized: { parameters: ["buffer"], result: "i32" },
  MPI_Init_thread: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
  MPI_Comm_rank: { parameters: ["i32", "buffer"], result: "i32" },
  MPI_Comm_size: { parameters: ["i32", "buffer"], result: "i32" },
  MPI_Comm_set_errhandler: { parameters: ["i32", "i32"], result: "i32" },
  MPI_Error_string: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  MPI_Allreduce: {
    parameters: ["pointer", "pointer", "i32", "i32", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Bcast: {
    parameters: ["pointer", "i32", "i32", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Barrier: { parameters: ["i32"], result: "i32", nonblocking: true },
  MPI_Abort: { parameters: ["i32", "i32"], result: "i32" },
  MPI_Finalize: { parameters: [], result: "i32" },
} as const;

type MpiLibrary = Deno.DynamicLibrary<typeof SYMBOLS>;

/** A failed MPI call, with MPI's own message. */
export class MpiError extends Error {
  constructor(readonly call: string, readonly code: number, detail: string) {
    super(`${call} failed (MPI error ${code}): ${detail}`);
    this.name = "MpiError";
  }
}

let opened: MpiCollective | undefined;

/**
 * Initialise MPI (once per process) and return the world communicator as a {@link Collective}.
 * Run under `mpiexec -n N ...`; started alone, it is a group of size 1. Throws a message naming
 * the package when the library is missing.
 */
export function openMpi(options: MpiOptions = {}): Collective {
  if (opened) {
    if (opened.finalized) throw new Error("openMpi: MPI was finalized; it cannot start again");
    return opened;
  }
  const library = options.library ?? MPI_LIBRARY;
  let lib: MpiLibrary;
  try {
    lib = Deno.dlopen(library, SYMBOLS);
  } catch (error) {
    throw new Error(
      `MPI library ${library} not found: install it with \`apt-get install mpich\` ` +
        "(Debian/Ubuntu; it also provides mpiexec), or another MPICH-ABI MPI (Intel MPI, " +
        `MVAPICH) on the library path. (${(error as Error).message})`,
    );
  }
  opened = new MpiCollective(lib, options.maxChunkBytes ?? DEFAULT_MAX_CHUNK_BYTES);
  return opened;
}

class MpiCollective implements Collective {
  readonly rank: number;
  readonly size: number;
  finalized = false;
  /** The collective in flight (or settled): the next one starts after it. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Collectives queued or in flight. */
  private pending = 0;
  /** MPI_IN_PLACE, `(void *) -1` in MPICH's mpi.h (made here, not at import: FFI permission). */
  private inPlace = Deno.UnsafePointer.create(0xffffffffffffffffn);

  constructor(private lib: MpiLibrary, private maxChunkBytes: number) {
    if (!(maxChunkBytes >= 4 && maxChunkBytes <= 0x7fffffff)) {
      throw new Error(`openMpi: maxChunkBytes ${maxChunkBytes} must be in 4..2^31-1`);
    }
    const s = lib.symbols;
    const out = new Int32Array(1);
    this.check("MPI_Initialized", s.MPI_Initialized(out));
    if (out[0] === 0) {
      this.check(
        "MPI_Init_thread",
        s.MPI_Init_thread(null, null, MPI_THREAD_MULTIPLE, out),
      );
      if (out[0] < MPI_THREAD_SERIALIZED) {
        throw new Error(
          `MPI provides thread level MPI_THREAD_${THREAD_LEVEL_NAMES[out[0]] ?? out[0]}, but ` +
            "collectives run on Deno's worker threads and need at least MPI_THREAD_SERIALIZED: " +
            "use an MPI built with thread support (Debian's mpich is)",
        );
      }
    }
    // Errors come back as return codes (turned into MpiError) instead of aborting the job.
    this.check(
      "MPI_Comm_set_errhandler",
      s.MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN),
    );
    this.check("MPI_Comm_rank", s.MPI_Comm_rank(MPI_COMM_WORLD, out));
    this.rank = out[0];
    this.check("MPI_Comm_size", s.MPI_Comm_size(MPI_COMM_WORLD, out));
    this.size = out[0];
    // A rank that ends before finalize (its script returns, or Deno.exit) makes mpiexec kill the
    // other ranks without a word and report success (exit code 0, work lost): end the whole job
    // with a failure instead. (An uncaught exception exits 1 without this event: mpiexec then
    // ends every rank with that code by itself.)
    globalThis.addEventListener("unload", () => {
      if (this.finalized) return;
      const code = Deno.exitCode || 1;
      if (Deno.exitCode === 0) {
        console.error(
          `rank ${this.rank} ended before MPI finalize: stopping every rank with exit code ` +
            `${code} (call finalize() after the last collective)`,
        );
        // mpiexec forwards a rank's stderr through a pipe, and the abort can overtake it: give
        // the message 100 ms to get out (it was lost once, in a CI run of the tests under load).
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
      }
      s.MPI_Abort(MPI_COMM_WORLD, code);
    });
  }

  allReduceSum(data: Float32Array): Promise<void> {
    return this.enqueue(async () => {
      const chunk = Math.floor(this.maxChunkBytes / 4);
      for (let start = 0; start < data.length; start += chunk) {
        const part = data.subarray(start, Math.min(data.length, start + chunk));
        const code = await this.lib.symbols.MPI_Allreduce(
          this.inPlace,
          Deno.UnsafePointer.of(part),
          part.length,
          MPI_FLOAT,
          MPI_SUM,
          MPI_COMM_WORLD,
        );
        this.check("MPI_Allreduce", code);
      }
    });
  }

  broadcast(data: Uint8Array | Float32Array, root: number): Promise<void> {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return this.enqueue(async () => {
      for (let start = 0; start < bytes.length; start += this.maxChunkBytes) {
        const part = bytes.subarray(start, Math.min(bytes.length, start + this.maxChunkBytes));
        const code = await this.lib.symbols.MPI_Bcast(
          Deno.UnsafePointer.of(part),
          part.length,
          MPI_BYTE,
          root,
          MPI_COMM_WORLD,
        );
        this.check("MPI_Bcast", code);
      }
    });
  }

  barrier(): Promise<void> {
    return this.enqueue(async () => {
      this.check("MPI_Barrier", await this.lib.symbols.MPI_Barrier(MPI_COMM_WORLD));
    });
  }

  abort(code: number): void {
    // Say so ourselves first: MPICH prints its own abort line, but the kill that follows can
    // overtake mpiexec's forwarding of it (a CI run of the tests saw an empty stderr), so this
    // line gets the same 100 ms head start as the unload path's.
    console.error(`rank ${this.rank} aborts the job: MPI_Abort(MPI_COMM_WORLD, ${code})`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    this.lib.symbols.MPI_Abort(MPI_COMM_WORLD, code);
    // MPI_Abort does not return; if an MPI ever does, end this process at least.
    Deno.exit(code);
  }

  finalize(): void {
    if (this.finalized) return;
    if (this.pending > 0) {
      throw new Error(
        `finalize: ${this.pending} collective(s) still in flight: await them first`,
      );
    }
    this.finalized = true;
    this.check("MPI_Finalize", this.lib.symbols.MPI_Finalize());
  }

  /** Run `call` after the collectives already queued (one in MPI at a time, in call order). */
  private enqueue(call: () => Promise<void>): Promise<void> {
    if (this.finalized) return Promise.reject(new Error("MPI was finalized"));
    this.pending++;
    const next = this.queue.then(call).finally(() => this.pending--);
    this.queue = next.catch(() => {});
    return next;
  }

  private check(call: string, code: number): void {
    if (code === MPI_SUCCESS) return;
    const text = new Uint8Array(MPI_MAX_ERROR_STRING + 1);
    const length = new Int32Array(1);
    const ok = this.lib.symbols.MPI_Error_string(code, text, length) === MPI_SUCCESS;
    const detail = ok
      ? new TextDecoder().decode(text.subarray(0, length[0])).trim()
      : "no message from MPI_Error_string";
    throw new MpiError(call, code, detail);
  }
}

/**
 * An in-process group of collectives with MPI's semantics (no MPI needed): `LocalCollective.group(n)`
 * returns n members that must each call the same collectives in the same order; sums add the
 * members' buffers in rank order. A single member (`group(1)`) is the trivial group.
 */
export class LocalCollective implements Collective {
  private calls = 0;
  private finalized = false;

  private constructor(readonly rank: number, readonly size: number, private hub: Rendezvous) {}

  /** `size` members of one group, indexed by rank. */
  static group(size: number): LocalCollective[] {
    if (!Number.isInteger(size) || size < 1) throw new Error(`group size ${size} must be >= 1`);
    const hub = new Rendezvous(size);
    return Array.from({ length: size }, (_, rank) => new LocalCollective(rank, size, hub));
  }

  async allReduceSum(data: Float32Array): Promise<void> {
    const all = await this.meet("allReduceSum", data.slice()) as Float32Array[];
    const sums = new Float32Array(data.length);
    for (const contribution of all) {
      if (contribution.length !== data.length) {
        throw new Error(
          `allReduceSum: rank ${this.rank} has ${data.length} values, another rank ` +
            `${contribution.length}`,
        );
      }
      for (let i = 0; i < sums.length; i++) sums[i] += contribution[i];
    }
    data.set(sums);
  }

  async broadcast(data: Uint8Array | Float32Array, root: number): Promise<void> {
    if (!(root >= 0 && root < this.size)) throw new Error(`broadcast: no rank ${root}`);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const all = await this.meet("broadcast", bytes.slice()) as Uint8Array[];
    if (all[root].length !== bytes.length) {
      throw new Error(
        `broadcast: rank ${this.rank} has ${bytes.length} bytes, root ${all[root].length}`,
      );
    }
    bytes.set(all[root]);
  }

  async barrier(): Promise<void> {
    await this.meet("barrier", null);
  }

  /** Fails every pending and later collective of the group (the in-process "end of the job"). */
  abort(code: number): void {
    this.hub.abort(new Error(`rank ${this.rank} aborted the group with code ${code}`));
  }

  finalize(): void {
    this.finalized = true;
  }

  /** Hand in this rank's contribution to call number `calls`; resolves with everyone's. */
  private meet(what: string, contribution: unknown): Promise<unknown[]> {
    if (this.finalized) return Promise.reject(new Error("collective was finalized"));
    return this.hub.meet(this.calls++, what, this.rank, contribution);
  }
}

/** Where the members of a {@link LocalCollective} group meet, one slot per collective call. */
class Rendezvous {
  private slots = new Map<number, {
    what: string;
    contributions: unknown[];
    arrived: number;
    done: Promise<unknown[]>;
    resolve: (all: unknown[]) => void;
    reject: (error: Error) => void;
  }>();
  private failure: Error | undefined;

  constructor(private size: number) {}

  meet(call: number, what: string, rank: number, contribution: unknown): Promise<unknown[]> {
    if (this.failure) return Promise.reject(this.failure);
    let slot = this.slots.get(call);
    if (!slot) {
      const { promise, resolve, reject } = Promise.withResolvers<unknown[]>();
      slot = { what, contributions: [], arrived: 0, done: promise, resolve, reject };
      this.slots.set(call, slot);
    }
    if (slot.what !== what) {
      this.abort(
        new Error(`collective mismatch: one rank called ${slot.what}, rank ${rank} ${what}`),
      );
      return slot.done;
    }
    slot.contributions[rank] = contribution;
    if (++slot.arrived === this.size) {
      this.slots.delete(call);
      slot.resolve(slot.contributions);
    }
    return slot.done;
  }

  abort(error: Error): void {
    this.failure ??= error;
    for (const slot of this.slots.values()) slot.reject(this.failure);
    this.slots.clear();
  }
}
