// Applying a layer on a worker thread. applyLayer's parser and file work are synchronous
// (per small file that is what makes it fast, see apply.ts), so on the main thread two
// layers applied "in parallel" take turns and the decompressor feeding them waits too.
// Here each apply runs on its own worker thread: the calling thread only reads the input
// (decompression and hashing happen there, in zlib's thread pool) and passes chunks on,
// so an image's layers really are applied at once on several cores.
//
// Workers are kept for reuse (up to the number of CPUs idle at once, unref'd so they never
// keep a process alive). A job never waits for a free worker: a busy pool starts another,
// so an apply whose input is produced by another apply cannot deadlock.
import { availableParallelism } from 'node:os';
import { MessageChannel, Worker } from 'node:worker_threads';
import type { Readable } from 'node:stream';
import { CairnError, type ErrorCode } from '../errors.js';
import type { ApplyOptions } from './apply.js';
import type { FromWorker, SerializedError, ToWorker } from './apply-worker.js';

/** Chunks in flight to a worker: enough to keep it busy while the reader fetches more, little memory. */
const WINDOW = 8;

// The worker's entry is this directory's apply-worker module: the compiled .js next to us,
// or (running from TypeScript sources, as the tests do) the .ts through the repository's
// loader hook.
const selfUrl = import.meta.url;
const fromSources = selfUrl.endsWith('.ts');
const workerEntry = new URL(fromSources ? './apply-worker.ts' : './apply-worker.js', selfUrl).href;
const tsLoader = fromSources ? new URL('../../../../scripts/ts-loader.mjs', selfUrl).href : null;

// Only dynamic import(): the eval'd code is CommonJS or an ES module depending on the
// process's flags (e.g. --input-type=module), and import() works in both.
const BOOTSTRAP = `
(async () => {
  const { workerData } = await import('node:worker_threads');
  if (workerData.tsLoader) (await import('node:module')).register(workerData.tsLoader);
  await import(workerData.entry);
})().catch((err) => { setImmediate(() => { throw err; }); });
`;

const idle: Worker[] = [];
let started = 0;
let jobs = 0;

/** Counters of the apply threads: workers started and applies run on them in this process. */
export function applyThreadStats(): { workersStarted: number; applies: number; idle: number } {
  return { workersStarted: started, applies: jobs, idle: idle.length };
}

function startWorker(): Worker {
  started++;
  const worker = new Worker(BOOTSTRAP, { eval: true, workerData: { entry: workerEntry, tsLoader } });
  worker.unref();
  return worker;
}

function takeWorker(): Worker {
  return idle.pop() ?? startWorker();
}

function giveBack(worker: Worker, healthy: boolean): void {
  if (healthy && idle.length < availableParallelism()) idle.push(worker);
  else void worker.terminate();
}

function rebuild(e: SerializedError): Error {
  const err = e.cairn
    ? new CairnError(e.code as ErrorCode, e.message, { subject: e.subject })
    : Object.assign(new Error(e.message), e.code ? { code: e.code } : {});
  // The worker's stack says where the apply failed; the caller's adds nothing.
  if (e.stack) err.stack = e.stack;
  return err;
}

/**
 * {@link applyLayer} on a worker thread; same arguments, same result, same errors.
 * The input is read on the calling thread (so a stream's own failure keeps its error).
 */
export async function applyLayerOffThread(dir: string, tar: Readable | AsyncIterable<Uint8Array>, opts: ApplyOptions): Promise<number> {
  const worker = takeWorker();
  jobs++;
  const { port1: port, port2 } = new MessageChannel();
  let credits = WINDOW;
  let creditWaiter: (() => void) | null = null;
  let settled = false;
  let healthy = true;
  let resolveResult!: (bytes: number) => void;
  let rejectResult!: (err: unknown) => void;
  const result = new Promise<number>((resolve, reject) => { resolveResult = resolve; rejectResult = reject; });
  // The worker can fail while this thread still waits for input; the rejection is awaited
  // only after that, and must not count as unhandled meanwhile (Node would exit on it).
  result.catch(() => undefined);
  const settle = (fn: () => void) => {
    if (settled) return;
    settled = true;
    fn();
    creditWaiter?.();
  };
  port.on('message', (m: FromWorker) => {
    if ('ack' in m) {
      credits++;
      creditWaiter?.();
      creditWaiter = null;
    } else if ('done' in m) {
      settle(() => resolveResult(m.done));
    } else {
      settle(() => rejectResult(rebuild(m.error)));
    }
  });
  const onWorkerError = (err: unknown) => {
    healthy = false;
    settle(() => rejectResult(new CairnError('ERR_PREREQUISITES', `the layer apply thread failed: ${err instanceof Error ? err.message : String(err)}`, { subject: dir, cause: err })));
  };
  const onExit = (code: number) => onWorkerError(new Error(`it exited with code ${code}`));
  worker.on('error', onWorkerError);
  worker.on('exit', onExit);
  // Defaults that come from this thread's environment are settled here: a pooled worker's
  // copy of process.env dates from when it started.
  const workerOpts: ApplyOptions = { ...opts, pureJs: opts.pureJs ?? process.env.CAIRN_PURE_JS === '1', offThread: false };
  worker.postMessage({ dir, opts: workerOpts, port: port2 }, [port2]);
  try {
    try {
      for await (const chunk of tar as AsyncIterable<Uint8Array>) {
        if (settled) break; // the worker has failed (or finished): stop reading, as applyLayer does
        if (chunk.length === 0) continue;
        // A copy the worker can own: stream chunks are often views into shared pool memory.
        const own = new Uint8Array(chunk);
        port.postMessage({ chunk: own } satisfies ToWorker, [own.buffer]);
        credits--;
        while (credits <= 0 && !settled) await new Promise<void>((resolve) => { creditWaiter = resolve; });
      }
    } catch (inputErr) {
      port.postMessage({ abort: true } satisfies ToWorker);
      await result.catch(() => undefined);
      throw inputErr;
    }
    port.postMessage({ end: true } satisfies ToWorker);
    return await result;
  } finally {
    worker.off('error', onWorkerError);
    worker.off('exit', onExit);
    port.close();
    giveBack(worker, healthy);
  }
}
