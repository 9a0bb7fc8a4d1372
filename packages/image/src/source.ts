// Where an image comes from: a directory (OCI image layout, or an unpacked docker save)
// or a tar file (docker save tarball, OCI archive), compressed or not. Either way the
// importer sees a set of named files it can read whole (JSON) or stream (layer blobs).
import { closeSync, constants as fsConstants, createReadStream, createWriteStream, openSync, read } from 'node:fs';
import { mkdtemp, open, rm, stat, type FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join, posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { CairnError, errnoCode, ownerToken } from '@cairnfs/core';
import { BENEATH_IN_ROOT, allocPopulated, fileTypeName, openBeneathSync, type BeneathFile } from '@cairnfs/sys';
import { decompressed, detectCompression, type DecompressLimit } from './decompress.js';
import { indexTar, type IndexedFile } from './tarindex.js';

const readAsync = promisify(read);

export interface BlobSource {
  /** A file's content, or undefined when the source has no such file. */
  read(path: string): Promise<Buffer | undefined>;
  /** Streams a file (ERR_INVALID_ARCHIVE when missing). */
  stream(path: string): AsyncIterable<Uint8Array>;
  /** Byte size of a file, or undefined. */
  size(path: string): Promise<number | undefined>;
  /**
   * A hint that `path` will be streamed next, while the caller is busy with something
   * else: a remote source may start fetching it. Optional; sources on disk ignore it.
   */
  prefetch?(path: string): void;
  close(): Promise<void>;
}

/** Bytes per chunk of a streamed blob. */
const CHUNK = 1 << 20;

/**
 * Reads `fd` from `start` to `end` (exclusive; EOF ends it earlier) in CHUNK-sized
 * chunks, each a new buffer (consumers may keep them) whose pages are mapped before the
 * read fills it: createReadStream's fresh 1 MiB buffers took 256 page faults each, more CPU
 * than an uncompressed layer's hash (docs/benchmarks.md).
 */
async function* readRange(fd: number, start: number, end: number): AsyncGenerator<Buffer> {
  for (let pos = start; pos < end;) {
    const want = Math.min(CHUNK, end - pos);
    const buf = allocPopulated(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await readAsync(fd, buf, got, want - got, pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got === 0) return;
    pos += got;
    yield got === want ? buf : buf.subarray(0, got);
    if (got < want) return;
  }
}

/**
 * A blob that is a byte range of a file the source holds open (a layer.tar inside a docker
 * save archive, a blob file of a layout): iterated, it streams the range in chunks; the
 * importer may instead hand the range itself to the native applier (applyBlob), which
 * reads it with pread as tar reads its input. It opens on first use; `close()` releases
 * what it opened (iteration closes it at its end too).
 */
export class FileRange implements AsyncIterable<Uint8Array> {
  private opened: { fd: number; start: number; length: number; close: () => void } | undefined;
  private closed = false;
  constructor(private readonly opener: () => { fd: number; start: number; length: number; close: () => void }) {}

  open(): { fd: number; start: number; length: number } {
    if (this.closed) throw new Error('FileRange: closed');
    this.opened ??= this.opener();
    return this.opened;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.opened?.close();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    const r = this.open();
    try {
      if (r.length > 0) yield* readRange(r.fd, r.start, r.start + r.length);
    } finally {
      this.close();
    }
  }
}

const clean = (p: string) => posix.normalize(`/${p}`).slice(1);

const missing = (path: string) => new CairnError('ERR_INVALID_ARCHIVE',
  `the image references ${path}, which it does not contain; the image is incomplete`, { subject: path });

/**
 * Most bytes of one JSON document (manifest.json, index.json, a manifest, a config) read
 * whole into memory. Real ones are kilobytes; the largest configs (long histories) well
 * under a megabyte.
 */
export const MAX_JSON_BYTES = 16 << 20;

const tooLarge = (path: string, size: number) => new CairnError('ERR_INVALID_ARCHIVE',
  `${path} in the image is ${size} bytes, more than the ${MAX_JSON_BYTES} bytes a manifest or config may have; refused`, { subject: path });

/**
 * An image directory (an OCI layout, or an extracted docker save). The directory is the
 * image's, so it is as untrusted as its content: every file is opened beneath it with
 * openBeneathSync, and must be a regular file. A symlink is followed only inside the
 * directory (RESOLVE_IN_ROOT: docker save links duplicate layer.tar files to the first
 * copy); one that leads out, to a host file, is refused, as is a fifo or device (opened
 * by O_PATH only, so a fifo cannot hang the import).
 */
class DirSource implements BlobSource {
  private readonly rootFd: number;
  constructor(private readonly dir: string) {
    this.rootFd = openSync(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  }

  /** The open fd of a regular file, or undefined when there is no such file. */
  private open(p: string): BeneathFile | undefined {
    const rel = clean(p);
    let f: BeneathFile;
    try {
      f = openBeneathSync(this.rootFd, rel);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      if (code !== 'ELOOP') throw unsafeSource(this.dir, p, 'leads outside the image directory', err);
      // A symlink on the way: follow it, but only inside the image directory.
      try {
        f = openBeneathSync(this.rootFd, rel, BENEATH_IN_ROOT);
      } catch (err2) {
        throw unsafeSource(this.dir, p, 'is a symlink (or lies below one) that does not lead to a file inside the image directory', err2);
      }
    }
    if (f.fd < 0) throw unsafeSource(this.dir, p, f.changed ? 'was replaced while it was being opened' : `is ${fileTypeName(f.mode)}, not a regular file`);
    return f;
  }

  async read(p: string): Promise<Buffer | undefined> {
    const f = this.open(p);
    if (!f) return undefined;
    try {
      if (f.size > MAX_JSON_BYTES) throw tooLarge(p, f.size);
      const buf = Buffer.alloc(f.size);
      let done = 0;
      while (done < f.size) {
        const { bytesRead } = await readAsync(f.fd, buf, done, f.size - done, done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buf.subarray(0, done);
    } finally {
      closeSync(f.fd);
    }
  }
  async size(p: string): Promise<number | undefined> {
    const f = this.open(p);
    if (!f) return undefined;
    closeSync(f.fd);
    return f.size;
  }
  stream(p: string): AsyncIterable<Uint8Array> {
    // The range owns the fd once opened, and reads only that checked inode (its size then).
    return new FileRange(() => {
      const f = this.open(p);
      if (!f) throw missing(p);
      return { fd: f.fd, start: 0, length: f.size, close: () => closeSync(f.fd) };
    });
  }
  async close(): Promise<void> {
    closeSync(this.rootFd);
  }
}

function unsafeSource(dir: string, p: string, why: string, cause?: unknown): CairnError {
  return new CairnError('ERR_UNSAFE_ARCHIVE', `${p} in the image directory ${dir} ${why}; refusing to read it`, { subject: p, cause });
}

class TarSource implements BlobSource {
  constructor(private readonly fh: FileHandle,
    private readonly files: Map<string, IndexedFile>, private readonly tmp: string | null) {}
  async read(p: string): Promise<Buffer | undefined> {
    const f = this.files.get(clean(p));
    if (!f) return undefined;
    if (f.size > MAX_JSON_BYTES) throw tooLarge(p, f.size);
    const buf = Buffer.alloc(f.size);
    await this.fh.read(buf, 0, f.size, f.offset);
    return buf;
  }
  async size(p: string): Promise<number | undefined> {
    return this.files.get(clean(p))?.size;
  }
  stream(p: string): AsyncIterable<Uint8Array> {
    return new FileRange(() => {
      const f = this.files.get(clean(p));
      if (!f) throw missing(p);
      return { fd: this.fh.fd, start: f.offset, length: f.size, close: () => undefined };
    });
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
    return new TarSource(fh, await indexTar(fh), tmp);
  } catch (err) {
    await fh.close();
    if (tmp) await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}
