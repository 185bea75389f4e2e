/** Helpers shared by the dataset loaders: the error type, index checks, file tests, gunzip. */

/** A dataset input problem; the message names the file and how to fix it. */
export class DatasetError extends Error {
  constructor(readonly file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = "DatasetError";
  }
}

/** Validate batch indices against a dataset length. */
export function checkIndices(name: string, indices: ArrayLike<number>, length: number): void {
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k];
    if (!Number.isInteger(i) || i < 0 || i >= length) {
      throw new Error(`${name}: sample index ${i} out of range [0, ${length})`);
    }
  }
}

/** Whether a path exists and is a directory. */
export function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** Whether a path exists and is a file. */
export function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** Join path parts with "/" (the loaders only build paths below a user-given directory). */
export function joinPath(...parts: string[]): string {
  return parts.join("/").replace(/\/+/g, "/");
}

/** Gunzip a whole file's bytes; a corrupt stream throws naming the file. */
export async function gunzip(bytes: Uint8Array<ArrayBuffer>, file: string): Promise<Uint8Array> {
  try {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  } catch (e) {
    throw new DatasetError(
      file,
      `corrupt gzip data (${(e as Error).message}); delete the file and download it again`,
    );
  }
}
