/**
 * Reading and writing the safetensors format (an 8-byte little-endian header length, a JSON
 * header naming each tensor's dtype, shape and byte range, then the raw little-endian data).
 * Writes are atomic: a temporary file beside the target is renamed over it.
 */

/** The element types we store. */
export type SafeDType = "F32" | "I64" | "U32";

/** One named tensor on the CPU. */
export interface HostTensor {
  dtype: SafeDType;
  shape: number[];
  data: Float32Array | BigInt64Array | Uint32Array;
}

/** A whole file: tensors plus string metadata. */
export interface SafetensorsFile {
  tensors: Map<string, HostTensor>;
  metadata: Record<string, string>;
}

const BYTES: Record<SafeDType, number> = { F32: 4, I64: 8, U32: 4 };

/** Serialise tensors and metadata to bytes. */
export function encodeSafetensors(file: SafetensorsFile): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: file.metadata };
  let offset = 0;
  const names = [...file.tensors.keys()];
  for (const name of names) {
    const t = file.tensors.get(name)!;
    const bytes = t.data.byteLength;
    const expected = t.shape.reduce((a, b) => a * b, 1) * BYTES[t.dtype];
    if (bytes !== expected) {
      throw new Error(
        `safetensors: ${name} has ${bytes} bytes, shape [${t.shape}] needs ${expected}`,
      );
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so the data starts 8-byte aligned.
  while ((8 + new TextEncoder().encode(json).length) % 8 !== 0) json += " ";
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const name of names) {
    const t = file.tensors.get(name)!;
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    at += t.data.byteLength;
  }
  return out;
}

/** Parse safetensors bytes; `source` names the file in errors. */
export function decodeSafetensors(bytes: Uint8Array, source = "checkpoint"): SafetensorsFile {
  const fail = (why: string): never => {
    throw new Error(`${source} is not a readable safetensors file: ${why}`);
  };
  if (bytes.length < 8) fail("shorter than its 8-byte header length");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (headerLength <= 0 || 8 + headerLength > bytes.length) fail("header length out of range");
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  } catch (e) {
    return fail(`header is not JSON (${(e as Error).message})`);
  }
  const dataStart = 8 + headerLength;
  const tensors = new Map<string, HostTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      metadata = entry as unknown as Record<string, string>;
      continue;
    }
    const dtype = entry.dtype as SafeDType;
    if (!(dtype in BYTES)) fail(`${name} has unsupported dtype ${entry.dtype}`);
    const [begin, end] = entry.data_offsets;
    const count = entry.shape.reduce((a, b) => a * b, 1);
    if (end - begin !== count * BYTES[dtype] || dataStart + end > bytes.length) {
      fail(
        `${name}: byte range [${begin}, ${end}) does not match shape [${entry.shape}] or the file is truncated`,
      );
    }
    const copy = bytes.slice(dataStart + begin, dataStart + end).buffer;
    const data = dtype === "F32"
      ? new Float32Array(copy)
      : dtype === "U32"
      ? new Uint32Array(copy)
      : new BigInt64Array(copy);
    tensors.set(name, { dtype, shape: entry.shape, data });
  }
  return { tensors, metadata };
}

/** Write atomically: a temporary file in the same directory, then rename over the target. */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const temporary = `${path}.${Deno.pid}.tmp`;
  const file = await Deno.open(temporary, { write: true, create: true, truncate: true });
  try {
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.syncData();
  } finally {
    file.close();
  }
  await Deno.rename(temporary, path);
}

/** Save a safetensors file atomically. */
export async function saveSafetensors(path: string, file: SafetensorsFile): Promise<void> {
  await writeFileAtomic(path, encodeSafetensors(file));
}

/** Load a safetensors file with a clear error when it is missing or unreadable. */
export async function loadSafetensors(path: string): Promise<SafetensorsFile> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new Error(`cannot read checkpoint ${path}: ${(e as Error).message}`);
  }
  return decodeSafetensors(bytes, path);
}
