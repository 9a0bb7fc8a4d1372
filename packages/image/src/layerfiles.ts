// The file-level steps of recording layers in a layer store: applying a blob with its
// digest and tar-split, and durable writes of new files and directories.
import { createHash } from 'node:crypto';
import { mkdir, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CairnError, fsyncDir, type StorageDriver } from '@cairnfs/core';
import { DEFAULT_MAX_UNCOMPRESSED_BYTES, decompressed } from './decompress.js';
import { SplitRecorder } from './tarsplit.js';

/** Writes a new file and fsyncs it (callers fsync its directory once all are written). */
export async function writeSyncedFile(path: string, data: string | Buffer): Promise<void> {
  const fh = await open(path, 'w', 0o600);
  try { await fh.writeFile(data); await fh.sync(); } finally { await fh.close(); }
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
 * stream is read to the end.
 */
export async function applyBlob(driver: StorageDriver, cacheId: string, parentCacheId: string | null, diffId: string,
    blob: AsyncIterable<Uint8Array>, onBytes: (n: number) => void, maxUncompressedBytes?: number) {
    const counted = (async function* () { for await (const c of blob) { onBytes(c.length); yield c; } })();
    const it = decompressed(counted, { maxBytes: maxUncompressedBytes, what: `layer ${diffId}` })[Symbol.asyncIterator]();
    const hash = createHash('sha256');
    const rec = new SplitRecorder({ maxLogicalBytes: maxUncompressedBytes ?? DEFAULT_MAX_UNCOMPRESSED_BYTES, what: `layer ${diffId}` });
    let tarSize = 0;
    const take = async (): Promise<IteratorResult<Buffer>> => {
      const r = await it.next();
      if (!r.done) { hash.update(r.value); rec.write(r.value); tarSize += r.value.length; }
      return r;
    };
    // The driver may stop reading at the end-of-archive marker; its return() must not
    // close the source, since the digest covers every byte up to EOF.
    const feed: AsyncIterable<Buffer> = {
      [Symbol.asyncIterator]: () => ({ next: take, return: async () => ({ done: true, value: undefined }) }),
    };
    let size: number;
    try {
      size = await driver.applyDiff(cacheId, parentCacheId, feed);
      while (!(await take()).done) { /* drain to EOF */ }
    } catch (err) {
      await it.return?.(undefined);
      throw err;
    }
    const split = await rec.finish();
    const got = `sha256:${hash.digest('hex')}`;
    if (got !== diffId) {
      throw new CairnError('ERR_INVALID_ARCHIVE',
        `layer content does not match the image: its diff id is ${got}, the image config says ${diffId}; the image is corrupt or was tampered with`,
        { subject: diffId });
    }
    return { size, tarSize, exact: rec.exact, split };
  }

