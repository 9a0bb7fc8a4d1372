// Byte-exact layer export, the way tar-split does it for moby: while a layer tar is
// applied, remember every byte of it that is *not* file content (headers, PAX records,
// padding, the end marker, trailing garbage) plus, for file content, only a reference
// (entry path, position in the file, length). The applied layer holds the content, so
// the original tar can be rebuilt from the two, digest for digest, at a cost of about
// one compressed header block per entry.
//
// The split file is a gzip of records:
//   'R' u32 len, bytes                      raw tar bytes
//   'Z' u32 len                             that many raw zero bytes (the native applier's
//                                           records: most header and padding bytes are zeros)
//   'S' u32 len, path, f64 size             a file entry begins: its logical size (sparse: real size)
//   'F' u32 len, path, f64 position, f64 length   file content, read from the layer
// ('S' is new with the hostile-image checks; splits without it are still read, their
// files checked against their size on disk only.)
import { createGzip } from 'node:zlib';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { posix } from 'node:path';
import { CairnError, fromAddonFault } from '@cairnfs/core';
import { TarParser, type TarEntry } from '@cairnfs/archive';
import { openSplitReplay, type SplitReplay } from '@cairnfs/sys';
import type { PackBuffers } from './packbuffers.js';


const RAW = 0x52;
const SIZE = 0x53;
const FILE = 0x46;
/** Raw bytes per record and per hand-off to gzip: bounds what the recorder holds uncompressed. */
const FLUSH_AT = 1 << 20;
const WHITEOUT = '.wh.';

export interface SplitRecorderOptions {
  /**
   * Most bytes the layer's files may hold, counted by their logical sizes (a sparse
   * file's real size, not the few bytes stored): past it the recording throws
   * ERR_INVALID_ARCHIVE, before the entry reaches the driver. A tiny image must not make a
   * 16 TiB sparse file that every later export, commit and migrate would stream.
   */
  maxLogicalBytes?: number;
  /** What is being recorded, for messages ("layer sha256:…"). */
  what?: string;
}

/**
 * Growable byte buffer with amortised O(1) appends (capacity doubles), so recording a
 * layer costs time linear in its size: the first version concatenated every raw run
 * again per chunk, and 200k symlink entries took 134 s.
 */
class Bytes {
  buf = Buffer.allocUnsafe(64 * 1024);
  len = 0;
  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = Buffer.allocUnsafe(cap);
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }
  bytes(b: Uint8Array): void { this.room(b.length); this.buf.set(b, this.len); this.len += b.length; }
  u8(v: number): void { this.room(1); this.buf[this.len++] = v; }
  u32(v: number): void { this.room(4); this.buf.writeUInt32BE(v, this.len); this.len += 4; }
  f64(v: number): void { this.room(8); this.buf.writeDoubleBE(v, this.len); this.len += 8; }
  /** The content so far, copied out; the buffer is then empty again (its capacity kept). */
  take(): Buffer { const out = Buffer.from(this.buf.subarray(0, this.len)); this.len = 0; return out; }
}

/**
 * The split file's gzip: records in (uncompressed, as SplitRecorder or the native
 * applier's import pass make them), the split file out. The compression runs in zlib's
 * thread pool as the layer streams in, so neither the event loop nor memory carries the
 * whole uncompressed record.
 */
export class SplitGzip {
  // Headers compress well even at level 1, ~4x faster than the default 6; 128 KiB output
  // chunks, an eighth of the round trips between zlib's pool thread and this one.
  private readonly gzip = createGzip({ level: 1, chunkSize: 128 * 1024 });
  private readonly compressed: Buffer[] = [];
  private readonly done: Promise<void>;
  constructor() {
    this.gzip.on('data', (c: Buffer) => this.compressed.push(c));
    this.done = new Promise((resolve, reject) => { this.gzip.on('end', resolve); this.gzip.on('error', reject); });
    this.done.catch(() => undefined); // observed in finish()
  }
  write(records: Buffer): void {
    if (records.length > 0) this.gzip.write(records);
  }
  async finish(): Promise<Buffer> {
    this.gzip.end();
    await this.done;
    return Buffer.concat(this.compressed);
  }
}

/** Feed it the uncompressed tar, chunk by chunk, in order; then `finish()` gives the split file. */
export class SplitRecorder {
  private readonly parser: TarParser;
  private current: TarEntry | undefined;
  /** Normalised names of the entries so far whose content the layer holds as a file. */
  private readonly files = new Set<string>();
  /**
   * False when the layer cannot be rebuilt from its files: an entry replaced one of its
   * files later in the same tar (a second copy, a device, a fifo, a link, a whiteout), or
   * a whiteout entry carries content. Such a layer is exported through the driver's diff.
   */
  exact = true;
  private input: Buffer = Buffer.alloc(0);
  private inputPos = 0;
  private logical = 0;
  private readonly out = new Bytes();
  /** Offset in `out` of the open raw record's length field, or -1. */
  private rawAt = -1;
  /** A file record not yet written: merged with the next while contiguous. */
  private file: { path: string; position: number; length: number } | undefined;
  private readonly gzip = new SplitGzip();

  constructor(private readonly opts: SplitRecorderOptions = {}) {
    this.parser = new TarParser({
      entry: (entry) => this.onEntry(entry),
      data: (chunk, position) => this.onData(chunk, position),
      end: () => { this.current = undefined; },
    });
  }

  write(chunk: Buffer): void {
    this.input = chunk;
    this.inputPos = 0;
    this.parser.write(chunk);
    this.raw(this.input.subarray(this.inputPos));
    if (this.out.len >= FLUSH_AT) this.flush();
  }

  /**
   * Ends the tar; returns the compact, gzipped split description. The compression runs in
   * zlib's thread pool as the layer streams in (a megabyte at a time), so neither the
   * event loop nor memory carries the whole uncompressed record.
   */
  async finish(): Promise<Buffer> {
    this.parser.finish();
    this.flush();
    return this.gzip.finish();
  }

  private onEntry(entry: TarEntry): void {
    this.flushFile();
    this.closeRaw();
    this.current = entry;
    // Without a trailing slash: `a/` (a directory) written over an earlier file `a` replaces it.
    const key = posix.normalize(`/${entry.name}`).replace(/(.)\/$/, '$1');
    const slash = key.lastIndexOf('/');
    const base = key.slice(slash + 1);
    // A whiteout `.wh.x` in the same tar removes (or, in overlay form, replaces) x.
    const replaced = base.startsWith(WHITEOUT) && !base.startsWith(`${WHITEOUT}${WHITEOUT}`)
      ? `${key.slice(0, slash)}/${base.slice(WHITEOUT.length)}` : key;
    if (this.files.has(key) || this.files.has(replaced)) this.exact = false;
    if (entry.type !== 'file') return;
    if (base.startsWith(WHITEOUT)) {
      if (entry.size > 0) this.exact = false; // the applier keeps no file for it to be read from
      return;
    }
    this.files.add(key);
    this.logical += entry.size;
    const max = this.opts.maxLogicalBytes;
    if (max !== undefined && this.logical > max) {
      const what = this.opts.what ?? 'the layer';
      throw new CairnError('ERR_INVALID_ARCHIVE',
        `${what} holds more than ${max} bytes of files counting sparse files at their full size ` +
        `(at ${entry.name}, ${entry.sparse ? 'a sparse file of ' : ''}${entry.size} bytes; maxUncompressedBytes): refused. ` +
        'If the image is genuine, import it with a larger maxUncompressedBytes.', { subject: entry.name });
    }
    const p = Buffer.from(entry.name, 'utf8');
    this.out.u8(SIZE); this.out.u32(p.length); this.out.bytes(p); this.out.f64(entry.size);
  }

  private onData(chunk: Buffer, position: number): void {
    // The parser hands out slices of the chunk it was given (no copies): the bytes
    // between the previous data slice and this one are raw tar bytes.
    if (chunk.buffer !== this.input.buffer) {
      throw new CairnError('ERR_BACKEND_FAILED', 'tar-split: the tar parser copied data; cannot locate file content in the stream');
    }
    const at = chunk.byteOffset - this.input.byteOffset;
    this.raw(this.input.subarray(this.inputPos, at));
    this.inputPos = at + chunk.length;
    this.closeRaw();
    const path = this.current!.name;
    const f = this.file;
    if (f && f.path === path && f.position + f.length === position) {
      f.length += chunk.length;
    } else {
      this.flushFile();
      this.file = { path, position, length: chunk.length };
    }
  }

  private raw(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.flushFile();
    for (let pos = 0; pos < bytes.length;) {
      if (this.rawAt < 0) { this.out.u8(RAW); this.rawAt = this.out.len; this.out.u32(0); }
      const n = Math.min(bytes.length - pos, FLUSH_AT - (this.out.len - this.rawAt - 4));
      this.out.bytes(bytes.subarray(pos, pos + n));
      pos += n;
      if (this.out.len - this.rawAt - 4 >= FLUSH_AT) this.flush();
    }
  }

  private closeRaw(): void {
    if (this.rawAt < 0) return;
    this.out.buf.writeUInt32BE(this.out.len - this.rawAt - 4, this.rawAt);
    this.rawAt = -1;
  }

  private flushFile(): void {
    const f = this.file;
    if (!f) return;
    this.file = undefined;
    const p = Buffer.from(f.path, 'utf8');
    this.out.u8(FILE); this.out.u32(p.length); this.out.bytes(p); this.out.f64(f.position); this.out.f64(f.length);
  }

  /** Hands the records so far to gzip (a pending file record stays, it may still grow). */
  private flush(): void {
    this.closeRaw();
    if (this.out.len > 0) this.gzip.write(this.out.take());
  }
}

/** Bytes per buffer of a public stream: large enough that a fill costs little next to its content. */
export const REPLAY_CHUNK = 1 << 20;

/**
 * One layer's original tar, rebuilt from its split file (gzipped records) and the layer's
 * files under a root, in the addon (@cairnfs/sys's SplitReplay: every recorded file
 * checked before the first byte, each read only through an fd opened beneath the root
 * without following links and checked to be the regular file recorded), into a
 * PackBuffers' buffers. The result is checked against the layer's digest: a mismatch (the
 * layer was changed on disk) ends it with ERR_INVALID_ARCHIVE rather than passing off other
 * bytes; with the tar's size recorded at import, a split that rebuilds another size fails
 * before the first byte. The check starts on the pool as soon as the replay is opened, so
 * that an image export checks the next layer while the one before it streams. `close()` is
 * owed on every path; it waits for the check.
 */
export class LayerReplay {
  private readonly checked: Promise<void>;

  private constructor(
    private readonly replay: SplitReplay,
    private readonly fds: number[],
    private readonly expectDigest: string,
    private readonly release?: () => Promise<void>,
  ) {
    this.checked = replay.verify().catch((err: unknown) => { throw fromAddonFault(err); });
    // Its failure is the layer's, raised when its turn comes (ready or into).
    this.checked.catch(() => undefined);
  }

  /** Opens the replay and starts its check; `release` runs at close (a driver's put). */
  static open(splitFile: string, root: string, expectDigest: string, expectBytes?: number, release?: () => Promise<void>): LayerReplay {
    const fds = [openSync(root, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY)];
    try {
      fds.push(openSync(splitFile, fsConstants.O_RDONLY));
      return new LayerReplay(openSplitReplay(fds[0]!, fds[1]!, expectBytes), fds, expectDigest, release);
    } catch (err) {
      for (const fd of fds) closeSync(fd);
      throw err;
    }
  }

  /** Resolves once every recorded file was found as recorded; rejects with why not. */
  ready(): Promise<void> {
    return this.checked;
  }

  /** The tar into `out`'s buffers, each yielded when full, its digest checked at the end; returns its size. */
  async *into(out: PackBuffers): AsyncGenerator<Buffer, number> {
    await this.checked;
    for (;;) {
      const n = await fill(this.replay, out.room(), out.reused);
      if (n === 0) break;
      yield* out.advance(n);
    }
    const state = this.replay.digest();
    const got = `sha256:${state.digest}`;
    if (got !== this.expectDigest) {
      throw new CairnError('ERR_INVALID_ARCHIVE', `the rebuilt layer tar has digest ${got}, not ${this.expectDigest}: the layer's files changed since import`, { subject: this.expectDigest });
    }
    return state.bytes;
  }

  /** into(), then close() however it ends: a replay used once, at once (exportLayer). */
  async *intoThenClose(out: PackBuffers): AsyncGenerator<Buffer, number> {
    try {
      return yield* this.into(out);
    } finally {
      await this.close();
    }
  }

  async close(): Promise<void> {
    // The check may still be running on the pool, on these fds.
    await this.checked.catch(() => undefined);
    this.replay.close();
    for (const fd of this.fds.splice(0)) closeSync(fd);
    await this.release?.();
  }
}

/** One fill, its archive faults as CairnErrors (an errno error keeps its code, with the entry it hit). */
async function fill(replay: SplitReplay, buf: Buffer, lagHash: boolean): Promise<number> {
  try {
    return await replay.fill(buf, lagHash);
  } catch (err) {
    throw fromAddonFault(err);
  }
}
