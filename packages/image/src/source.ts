// Where an image comes from: a directory (OCI image layout, or an unpacked docker save)
// or a tar file (docker save tarball, OCI archive), compressed or not. Either way the
// importer sees a set of named files it can read whole (JSON) or stream (layer blobs).
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, readFile, rm, stat, type FileHandle } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { CairnError, ownerToken } from '@cairnfs/core';
import { decompressed, detectCompression, type DecompressLimit } from './decompress.js';
import { indexTar, type IndexedFile } from './tarindex.js';

export interface BlobSource {
  /** A file's content, or undefined when the source has no such file. */
  read(path: string): Promise<Buffer | undefined>;
  /** Streams a file (ERR_INVALID_ARCHIVE when missing). */
  stream(path: string): AsyncIterable<Uint8Array>;
  /** Byte size of a file, or undefined. */
  size(path: string): Promise<number | undefined>;
  close(): Promise<void>;
}

const clean = (p: string) => posix.normalize(`/${p}`).slice(1);

const missing = (path: string) => new CairnError('ERR_INVALID_ARCHIVE',
  `the image references ${path}, which it does not contain; the image is incomplete`, { subject: path });

class DirSource implements BlobSource {
  constructor(private readonly dir: string) {}
  private path(p: string): string { return join(this.dir, clean(p)); }
  async read(p: string): Promise<Buffer | undefined> {
    try { return await readFile(this.path(p)); } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }
  async size(p: string): Promise<number | undefined> {
    return stat(this.path(p)).then((s) => s.size, () => undefined);
  }
  async *stream(p: string): AsyncIterable<Uint8Array> {
    if ((await this.size(p)) === undefined) throw missing(p);
    yield* createReadStream(this.path(p), { highWaterMark: 1 << 20 });
  }
  async close(): Promise<void> {}
}

class TarSource implements BlobSource {
  constructor(private readonly file: string, private readonly fh: FileHandle,
    private readonly files: Map<string, IndexedFile>, private readonly tmp: string | null) {}
  async read(p: string): Promise<Buffer | undefined> {
    const f = this.files.get(clean(p));
    if (!f) return undefined;
    const buf = Buffer.alloc(f.size);
    await this.fh.read(buf, 0, f.size, f.offset);
    return buf;
  }
  async size(p: string): Promise<number | undefined> {
    return this.files.get(clean(p))?.size;
  }
  async *stream(p: string): AsyncIterable<Uint8Array> {
    const f = this.files.get(clean(p));
    if (!f) throw missing(p);
    if (f.size === 0) return;
    yield* createReadStream(this.file, { start: f.offset, end: f.offset + f.size - 1, highWaterMark: 1 << 20 });
  }
  async close(): Promise<void> {
    await this.fh.close();
    if (this.tmp) await rm(this.tmp, { recursive: true, force: true });
  }
}

/**
 * Opens an image directory or archive. A compressed archive (`docker save | gzip`) is
 * first decompressed into a temporary file under `scratch`, since reading it needs
 * random access.
 */
export async function openSource(path: string, scratch: string, limit: DecompressLimit = {}): Promise<BlobSource> {
  let st;
  try { st = await stat(path); } catch (err) {
    throw new CairnError('ERR_INVALID_ARCHIVE', `cannot read image ${path}: ${(err as Error).message}`, { subject: path, cause: err });
  }
  if (st.isDirectory()) return new DirSource(path);
  let file = path;
  let tmp: string | null = null;
  const head = Buffer.alloc(4);
  const probe = await open(path, 'r');
  try { await probe.read(head, 0, 4, 0); } finally { await probe.close(); }
  if (detectCompression(head) !== 'none') {
    tmp = await mkdtemp(join(scratch, `archive@${ownerToken()}@`));
    file = join(tmp, 'image.tar');
    try {
      await pipeline(Readable.from(decompressed(createReadStream(path), limit)), createWriteStream(file));
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }
  const fh = await open(file, 'r');
  try {
    return new TarSource(file, fh, await indexTar(fh), tmp);
  } catch (err) {
    await fh.close();
    if (tmp) await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}
