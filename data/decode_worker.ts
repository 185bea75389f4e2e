/**
 * Web Worker that runs the folder dataset's decode tasks (`folder_decode.ts`) off the main
 * thread. Request: { id, task }. Reply: { id, pixels } (the buffer is transferred) or
 * { id, error }.
 */
import { type DecodeTask, runDecodeTask } from "./folder_decode.ts";

/** A decode request. */
export interface DecodeRequest {
  id: number;
  task: DecodeTask;
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
  const { id, task } = event.data;
  try {
    const pixels = await runDecodeTask(task);
    scope.postMessage({ id, pixels }, [pixels.buffer]);
  } catch (e) {
    scope.postMessage({ id, error: (e as Error).message });
  }
};
