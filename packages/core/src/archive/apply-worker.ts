// The worker side of applyLayerOffThread (apply-thread.ts): each job arrives with its own
// MessagePort, over which the layer's tar chunks stream in. The worker runs the ordinary
// applyLayer on them (same parser, same rules, same native file path) and answers with
// the bytes written or the error, serialised so the caller can rebuild the CairnError.
import { parentPort } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { isCairnError } from '../errors.js';
import { applyLayer, type ApplyOptions } from './apply.js';

export interface ApplyJob {
  dir: string;
  opts: ApplyOptions;
  port: MessagePort;
}

/** What the caller sends on a job's port. */
export type ToWorker = { chunk: Uint8Array } | { end: true } | { abort: true };
/** What the worker answers on a job's port. */
export type FromWorker =
  | { ack: true }
  | { done: number }
  | { error: SerializedError };

export interface SerializedError {
  cairn: boolean;
  code?: string;
  message: string;
  subject?: string;
  stack?: string;
}

export function serializeError(err: unknown): SerializedError {
  if (isCairnError(err)) return { cairn: true, code: err.code, message: err.message, subject: err.subject, stack: err.stack };
  const e = err instanceof Error ? err : new Error(String(err));
  const code = (e as NodeJS.ErrnoException).code;
  return { cairn: false, code: typeof code === 'string' ? code : undefined, message: e.message, stack: e.stack };
}

/** Thrown into applyLayer's input when the caller's stream failed; the caller keeps its own error. */
class InputAborted extends Error {}

/** The job's chunks as an async iterable, acknowledging each one as it is taken (flow control). */
function chunksFrom(port: MessagePort): AsyncIterable<Uint8Array> {
  const queue: Uint8Array[] = [];
  let ended = false;
  let aborted = false;
  let wake: (() => void) | null = null;
  port.on('message', (m: ToWorker) => {
    if ('chunk' in m) queue.push(m.chunk);
    else if ('end' in m) ended = true;
    else aborted = true;
    wake?.();
    wake = null;
  });
  return {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (aborted) throw new InputAborted('the input stream failed');
        const chunk = queue.shift();
        if (chunk) {
          port.postMessage({ ack: true } satisfies FromWorker);
          yield chunk;
          continue;
        }
        if (ended) return;
        await new Promise<void>((resolve) => { wake = resolve; });
      }
    },
  };
}

async function run(job: ApplyJob): Promise<void> {
  const { port } = job;
  try {
    const bytes = await applyLayer(job.dir, chunksFrom(port), { ...job.opts, offThread: false });
    port.postMessage({ done: bytes } satisfies FromWorker);
  } catch (err) {
    port.postMessage({ error: serializeError(err) } satisfies FromWorker);
  } finally {
    port.close();
  }
}

parentPort?.on('message', (job: ApplyJob) => { void run(job); });
