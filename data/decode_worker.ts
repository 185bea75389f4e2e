/**
 * Web Worker that reads, decodes and resizes image files for the folder dataset, off the main
 * thread. Request: { id, paths, size }. Reply: { id, pixels } (uint8 RGB, `paths.length` images
 * of size x size, back to back; the buffer is transferred) or { id, error }.
 */
import { loadImageFile } from "./image.ts";

/** A decode request. */
export interface DecodeRequest {
  id: number;
  paths: string[];
  size: number;
}

/** A decode reply. */
export interface DecodeReply {
  id: number;
  pixels?: Uint8Array;
  error?: string;
}

const scope = self as unknown as {
  onmessage: ((event: MessageEvent<DecodeRequest>) => void) | null;
  postMessage(message: DecodeReply, transfer?: Transferable[]): void;
};

scope.onmessage = async (event: MessageEvent<DecodeRequest>) => {
  const { id, paths, size } = event.data;
  try {
    const imageBytes = size * size * 3;
    const pixels = new Uint8Array(paths.length * imageBytes);
    for (let i = 0; i < paths.length; i++) {
      pixels.set(await loadImageFile(paths[i], size), i * imageBytes);
    }
    scope.postMessage({ id, pixels }, [pixels.buffer]);
  } catch (e) {
    scope.postMessage({ id, error: (e as Error).message });
  }
};
