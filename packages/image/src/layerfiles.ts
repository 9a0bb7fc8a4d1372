// The file-level steps of recording layers in a layer store: applying a blob with its
// digest and tar-split, and durable writes of new files and directories.
import { createHash, type Hash } from 'node:crypto';
import { mkdirSync, readSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CairnError, fsyncDir, type StorageDriver } from '@cairnfs/core';
import { applierDecodes, renameDurable, writeNewFiles } from '@cairnfs/sys';
import { TappedTar, type TarCompressed, type TarFileRange } from '@cairnfs/archive';
import { DEFAULT_MAX_UNCOMPRESSED_BYTES, decompressed, detectCompression, peeked } from './decompress.js';
import { FileRange } from './source.js';
import { SplitGzip, SplitRecorder } from './tarsplit.js';

/**
 * A new record directory (a layer's in the layerdb, a container's) made whole or not at
 * all: its files written and fsynced in the scratch dir `stage`, which is then renamed to
 * `target` durably. Durable before the rename names it: else power loss could leave the
 * record with empty files. Three pool jobs where one per open, write, fsync and close
 * made 38 for a layer.
 */
export async function writeRecordDir(stage: string, files: ReadonlyArray<readonly [string, string | Uint8Array]>, target: string): Promise<void> {
  mkdirSync(stage, { recursive: true }); // the store's scratch dir, local: microseconds
  await writeNewFiles(stage, files);
  await mkdirDurable(dirname(target));
  await renameDurable(stage, target);
}

/**
 * mkdir -p whose new directories survive power loss: each one's parent is fsynced, so the
 * first layer or image recorded under a fresh tree does not vanish with its directory.
 */
export async function mkdirDurable(path: string): Promise<void> {
  const first = await mkdir(path, { recursive: true });
  if (first === undefined) return;
  for (let dir = path; ; dir = dirname(dir)) {
    await fsyncDir(dirname(dir));
    if (dir === first || dir === dirname(dir)) break;
  }
}

/**
 * Applies one layer blob to the driver layer `cacheId`, hashing the uncompressed stream and
 * recording its tar-split as it passes to the driver; the diff id is checked once the
 * stream is read to the end, before the caller commits the layer.
 *
 * The hash and the record are made by the native applier in its own pass on the pool
 * thread when the driver applies through applyLayer's native path (a TappedTar); for a
 * blob that is a byte range of a file the applier also reads the range itself; a gzip or
 * zstd blob, read or streamed, it decodes there too.
 * Any other consumer of the tar gets the JS path: sha256 and SplitRecorder on this thread.
 */
export async function applyBlob(driver: StorageDriver, cacheId: string, parentCacheId: string | null, diffId: string,
    blob: AsyncIterable<Uint8Array>, onBytes: (n: number) => void, maxUncompressedBytes?: number) {
    const what = `layer ${diffId}`;
    const maxLogicalBytes = maxUncompressedBytes ?? DEFAULT_MAX_UNCOMPRESSED_BYTES;
    try {
      const fileBlob = blob instanceof FileRange ? nativeRange(blob, maxLogicalBytes) : undefined;
      // A range is counted by the native pass as it reads (tap.onBytes), or by the JS path here.
      const counted = (async function* () { for await (const c of blob) { onBytes(c.length); yield c; } })();
      // A stream's compression is known from its first bytes: a gzip or zstd stream the addon
      // can decode goes to the applier compressed, to be decoded in its pass.
      const raw = fileBlob ? undefined : await peeked(counted[Symbol.asyncIterator]());
      const inPass = raw && raw.kind !== 'none' && applierDecodes(raw.kind) ? { kind: raw.kind, maxBytes: maxLogicalBytes } : undefined;
      const source: AsyncIterable<Uint8Array> = raw ? { [Symbol.asyncIterator]: () => raw.it } : counted;
      const it = decompressed(source, { maxBytes: maxUncompressedBytes, what })[Symbol.asyncIterator]();
      let hash: Hash | undefined;
      let rec: SplitRecorder | undefined;
      let tarSize = 0;
      const take = async (): Promise<IteratorResult<Buffer>> => {
        const r = await it.next();
        hash ??= createHash('sha256');
        rec ??= new SplitRecorder({ maxLogicalBytes, what });
        if (!r.done) { hash.update(r.value); rec.write(r.value); tarSize += r.value.length; }
        return r;
      };
      // The driver may stop reading at the end-of-archive marker; its return() must not
      // close the source, since the digest covers every byte up to EOF.
      const feed: AsyncIterable<Buffer> = {
        [Symbol.asyncIterator]: () => ({ next: take, return: async () => ({ done: true, value: undefined }) }),
      };
      // The native path's split file: gzipped by the addon, or its raw records gzipped here.
      const gzParts: Buffer[] = [];
      let records: SplitGzip | undefined;
      const next = inPass ? () => raw!.it.next() : () => it.next();
      const native: AsyncIterable<Uint8Array> = { [Symbol.asyncIterator]: () => ({ next, return: async () => ({ done: true, value: undefined }) }) };
      const tar = new TappedTar(fileBlob?.range ?? native, {
        maxLogicalBytes, what, onRecord: (r, gzipped) => { if (gzipped) gzParts.push(r); else (records ??= new SplitGzip()).write(r); }, onBytes,
      }, feed, fileBlob ? fileBlob.compressed : inPass);
      let size: number;
      try {
        size = await driver.applyDiff(cacheId, parentCacheId, tar);
        if (!tar.claimed) while (!(await take()).done) { /* drain to EOF */ }
      } catch (err) {
        await it.return?.(undefined);
        await raw?.it.return?.(undefined); // when the native pass read it, `it` never started
        await records?.finish().catch(() => undefined);
        throw err;
      }
      let got: string, exact: boolean, split: Buffer;
      if (tar.claimed) {
        if (!tar.result) throw new CairnError('ERR_BACKEND_FAILED', `the driver ${driver.name} returned from applyDiff of ${what} before its input ended`, { subject: diffId });
        ({ digest: got, exact, bytes: tarSize } = tar.result);
        split = records ? await records.finish() : Buffer.concat(gzParts);
        await it.return?.(undefined);
        await raw?.it.return?.(undefined);
      } else {
        // The drain above called take() at least once, which made both.
        split = await rec!.finish();
        got = `sha256:${hash!.digest('hex')}`;
        exact = rec!.exact;
      }
      if (got !== diffId) {
        throw new CairnError('ERR_INVALID_ARCHIVE',
          `layer content does not match the image: its diff id is ${got}, the image config says ${diffId}; the image is corrupt or was tampered with`,
          { subject: diffId });
      }
      return { size, tarSize, exact, split };
    } finally {
      if (blob instanceof FileRange) blob.close();
    }
  }

/**
 * The range of a blob the native applier can read itself: a plain one (unless it is larger
 * than the uncompressed-bytes cap: the stream path refuses that as it does any other bomb),
 * or a gzip or zstd one the applier can decode in its pass (bounded by the same cap);
 * undefined otherwise, for the stream path.
 */
function nativeRange(blob: FileRange, maxBytes: number): { range: TarFileRange; compressed?: TarCompressed } | undefined {
  const r = blob.open();
  const head = Buffer.alloc(4);
  const n = r.length === 0 ? 0 : readSync(r.fd, head, 0, Math.min(4, r.length), r.start);
  const kind = detectCompression(head.subarray(0, n));
  const range = { fd: r.fd, start: r.start, length: r.length };
  if (kind === 'none') return r.length > maxBytes ? undefined : { range };
  return applierDecodes(kind) ? { range, compressed: { kind, maxBytes } } : undefined;
}
