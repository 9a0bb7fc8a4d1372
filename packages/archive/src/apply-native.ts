// applyLayer's default path: @cairnfs/sys's LayerApplier parses the tar and does every
// file operation natively (the rules of apply.ts, ported; the same test suites run on
// both). This module only feeds it input and turns its failures into CairnErrors.
//
// Off the JS thread (the default), input is handed over in batches of about 2 MiB while
// the next batch is read: one pool-thread job per batch costs ~10 µs, where one per
// 16 KiB decompressor chunk would add up; reading and applying overlap. Chunks are held,
// not copied, until their batch is applied: like any Readable consumer, this relies on
// the producer not changing a chunk once it was handed over.
import { ReadStream, fstatSync, readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { APPLIER_COMPRESSION, openLayerApplier, type LayerApplier } from '@cairnfs/sys';
import { CairnError, fromAddonFault } from '@cairnfs/core';
import { asBuffer } from './read-tar.js';
import type { ApplyOptions } from './apply-options.js';
import { reportDropped } from './owners.js';
import { TappedTar, isFileRange } from './tapped.js';

const BATCH_BYTES = 2 << 20;
/**
 * Bytes of a file range read per pool-thread job on the tapped path: between jobs the
 * tar-split records made so far go to the importer, so they never pile up in memory
 * (a slice of small files makes records of a fifth of its size: kept small enough to stay
 * in cache between the applier and the copy out).
 */
const RANGE_SLICE = 2 << 20;

/**
 * The process umask as of the start of the current apply (it decides whether a new file's
 * mode needs a chmod). Read afresh by every applyLayer (refreshUmask), not once per process:
 * a runtime may change its umask, and a stale 0 would leave files short of their modes.
 */
let umaskCache: number | undefined;
export function processUmask(): number {
  umaskCache ??= refreshUmask();
  return umaskCache;
}

/** Reads the umask from /proc/self/status (process.umask() without an argument is deprecated: it sets it to read it). */
export function refreshUmask(): number {
  try {
    const line = /^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'latin1'));
    if (line) return (umaskCache = parseInt(line[1]!, 8));
  } catch { /* no /proc: fall back below */ }
  return (umaskCache = process.umask());
}

/** Applies `tar` into the existing directory `root`; resolves to the content bytes written. */
export async function applyLayerNative(root: string, tar: Readable | AsyncIterable<Uint8Array>, opts: ApplyOptions, offThread: boolean,
  explain: (err: unknown, entry: string) => unknown): Promise<number> {
  let applier: LayerApplier;
  try {
    applier = openLayerApplier(root, {
      whiteouts: opts.whiteouts ?? 'delete',
      noDevices: opts.noDevices ?? false,
      ownership: opts.ownership ?? process.getuid?.() === 0,
      euid: process.geteuid?.() ?? -1,
      egid: process.getegid?.() ?? -1,
      umask: processUmask(),
      idMappings: opts.idMappings ?? null,
      ignoreChownErrors: opts.ignoreChownErrors ?? false,
      ...(opts.userXattr ? { opaqueXattr: 'user.overlay.opaque' } : {}),
    });
  } catch (err) {
    throw explain(fromAddonFault(err), '');
  }
  const tapped = tar instanceof TappedTar && tar.claim() ? tar : null;
  const file = tapped ? null : await wholeFileOf(tar);
  let inflight: Promise<void> | undefined;
  let gzipped = false;
  const done = async () => {
    const bytes = offThread ? await applier.finishAsync() : applier.finish();
    if (tapped) {
      const t = applier.tapEnd();
      tapped.tap.onRecord(t.record, gzipped);
      tapped.result = { digest: `sha256:${t.digest}`, exact: t.exact, bytes: t.bytes };
    }
    (opts.report ?? ((d) => reportDropped(root, d)))(applier.dropped);
    return bytes;
  };
  try {
    if (file !== null) {
      if (offThread) await applier.writeFromAsync(file.fd);
      else applier.writeFrom(file.fd);
      return await done();
    }
    if (tapped) gzipped = applier.tap(tapped.tap.maxLogicalBytes, tapped.tap.what, false, tapped.tap.rawRecords ?? false);
    if (tapped?.compressed) {
      const { kind, maxBytes } = tapped.compressed;
      const missing = applier.decompress(APPLIER_COMPRESSION[kind], maxBytes, tapped.tap.what);
      if (missing !== null) throw new CairnError('ERR_BACKEND_FAILED', `cannot decode a ${kind} layer in the applier: ${missing}`);
    }
    if (tapped && isFileRange(tapped.source)) {
      // The applier reads the range itself (as tar reads its input), hashing and recording
      // every byte of it; the records so far go to the importer between slices.
      const { fd, start, length } = tapped.source;
      for (let pos = 0; pos < length;) {
        const n = Math.min(RANGE_SLICE, length - pos);
        if (offThread) await applier.writeRangeAsync(fd, start + pos, n);
        else applier.writeRange(fd, start + pos, n);
        pos += n;
        tapped.tap.onRecord(applier.takeRecord(), gzipped);
        tapped.tap.onBytes?.(n);
      }
      return await done();
    }
    const input = (tapped ? tapped.source : tar) as AsyncIterable<Uint8Array>;
    let batch: Buffer[] = [];
    let batchBytes = 0;
    let sinceTake = 0;
    for await (const chunk of input) {
      // After the end-of-archive marker input is ignored (but a tapped applier still hashes
      // and records it); it is drained so the producer (a decompressor, a socket) is not
      // left blocked.
      if (chunk.length === 0 || (!tapped && applier.finished)) continue;
      if (!offThread) {
        applier.write(asBuffer(chunk));
        sinceTake += chunk.length;
        if (tapped && sinceTake >= BATCH_BYTES) { tapped.tap.onRecord(applier.takeRecord(), gzipped); sinceTake = 0; }
        continue;
      }
      batch.push(asBuffer(chunk));
      batchBytes += chunk.length;
      if (batchBytes < BATCH_BYTES) continue;
      if (inflight) {
        await inflight;
        if (tapped) tapped.tap.onRecord(applier.takeRecord(), gzipped);
      }
      inflight = applier.writeAsync(batch);
      // It may fail while the next batch is being read; it is awaited then, and must not
      // count as an unhandled rejection meanwhile (Node would exit on one).
      inflight.catch(() => undefined);
      batch = [];
      batchBytes = 0;
    }
    if (inflight) await inflight;
    inflight = undefined;
    if (batch.length > 0 && (tapped || !applier.finished)) await applier.writeAsync(batch);
    return await done();
  } catch (err) {
    // A failing input stream while a batch is applying: let the batch settle first.
    if (inflight) await inflight.catch(() => undefined);
    applier.abort();
    const e = err as { entry?: string } | null;
    throw explain(fromAddonFault(err), typeof e?.entry === 'string' ? e.entry : applier.currentName);
  } finally {
    applier.close();
    file?.stream.destroy(); // read through its fd here; closes it
  }
}

/**
 * A plain fs.ReadStream of a whole regular file that nobody has read from yet: its fd, once open,
 * so the addon can read the file itself (a JS stream costs a fresh 256 KiB buffer per
 * read and a hand-off to the pool per batch: ~15 % of an apply's CPU on tmpfs). Anything
 * else (a range, another consumer, a stream already flowing) goes through the stream.
 */
async function wholeFileOf(tar: Readable | AsyncIterable<Uint8Array>): Promise<{ fd: number; stream: ReadStream } | null> {
  if (!(tar instanceof ReadStream)) return null;
  const s = tar as ReadStream & { start?: number; end?: number; fd: number | null };
  const untouched = s.bytesRead === 0 && !s.destroyed && s.readableFlowing === null && s.readableLength === 0 &&
    s.listenerCount('data') === 0 && s.listenerCount('readable') === 0 &&
    (s.start === undefined || s.start === 0) && (s.end === undefined || s.end === Infinity);
  if (!untouched) return null;
  if (typeof s.fd !== 'number') {
    // Still opening: wait for its fd (or its failure, which the stream path then reports).
    const opened = await new Promise<boolean>((resolve) => {
      const done = (ok: boolean) => { s.off('ready', onReady); s.off('error', onError); resolve(ok); };
      const onReady = () => done(true);
      const onError = () => done(false);
      s.once('ready', onReady);
      s.once('error', onError);
    });
    if (!opened || typeof s.fd !== 'number') return null;
  }
  // pread needs a regular file (not a fifo, /dev/stdin or a socket).
  try {
    if (!fstatSync(s.fd).isFile()) return null;
  } catch {
    return null; // not a real fd (a stream over a custom `fs`)
  }
  return { fd: s.fd, stream: s };
}
