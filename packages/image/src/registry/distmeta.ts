// What the store knows about where its layers live in registries (after moby's
// image/<driver>/distribution/v2metadata-by-diffid): for each diff id, the compressed
// blobs that carry it — digest, media type, size, and the registry/repository they were
// pulled from or pushed to. A push reads it to skip blobs a registry already has (HEAD) or
// to mount them from another repository instead of uploading, and a second push of the
// same image uploads nothing.
//
//   ${store}/distribution/by-diffid/<diff id hex>.json   { "blobs": [BlobRecord, …] } newest first
//   ${store}/downloads/<blob hex>.partial                bytes of an interrupted pull (resumed with Range)
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../atomic.js';
import { hexOf, isDigest } from '../digest.js';

export interface BlobRecord {
  digest: string;
  mediaType: string;
  size: number;
  registry: string;
  repository: string;
}

/** Records kept per diff id: enough for a few registries and compressions, bounded. */
const MAX_RECORDS = 16;

export class DistributionMeta {
  constructor(private readonly storeDir: string) {}

  private get dir(): string { return join(this.storeDir, 'distribution', 'by-diffid'); }
  private file(diffId: string): string { return join(this.dir, `${hexOf(diffId)}.json`); }
  get downloads(): string { return join(this.storeDir, 'downloads'); }
  partial(digest: string): string { return join(this.downloads, `${hexOf(digest)}.partial`); }

  async blobsOf(diffId: string): Promise<BlobRecord[]> {
    try {
      const doc = JSON.parse(await readFile(this.file(diffId), 'utf8')) as { blobs?: unknown };
      if (!Array.isArray(doc.blobs)) return [];
      return doc.blobs.filter((b): b is BlobRecord => typeof b === 'object' && b !== null && isDigest((b as BlobRecord).digest)
        && typeof (b as BlobRecord).mediaType === 'string' && Number.isSafeInteger((b as BlobRecord).size)
        && typeof (b as BlobRecord).registry === 'string' && typeof (b as BlobRecord).repository === 'string');
    } catch {
      return []; // none recorded (or an unreadable record: then the push just uploads)
    }
  }

  /** Adds (or moves to the front) a blob record for a diff id. */
  async record(diffId: string, blob: BlobRecord): Promise<void> {
    const same = (b: BlobRecord) => b.digest === blob.digest && b.registry === blob.registry && b.repository === blob.repository;
    const blobs = [blob, ...(await this.blobsOf(diffId)).filter((b) => !same(b))].slice(0, MAX_RECORDS);
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(this.file(diffId), JSON.stringify({ blobs }) + '\n');
  }

  /** The diff ids records exist for (gc drops those of layers that are gone). */
  async diffIds(): Promise<string[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    return names.filter((n) => /^[0-9a-f]{64}\.json$/.test(n)).map((n) => `sha256:${n.slice(0, 64)}`);
  }

  async forget(diffId: string): Promise<void> {
    await rm(this.file(diffId), { force: true });
  }

  async ensureDownloads(): Promise<void> {
    await mkdir(this.downloads, { recursive: true, mode: 0o700 });
  }

  /** Deletes the partial downloads of interrupted pulls. */
  async dropPartials(): Promise<number> {
    const names = await readdir(this.downloads).catch(() => [] as string[]);
    for (const n of names) await rm(join(this.downloads, n), { force: true });
    return names.length;
  }
}
