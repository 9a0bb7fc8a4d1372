// Writing an export to a file descriptor without a fresh buffer per chunk.
//
// The Readable of exportChanges/exportOverlayUpper/exportTree hands its consumer a fresh
// 256 KiB Buffer per chunk, because a consumer may keep any chunk. V8 counts those buffers
// as external memory, and a full-size export allocates ~200 MiB of them; V8 frees them by
// scavenges in some processes and by a mark-compact every ~64 MiB in others (always on
// Node 24), which costs up to a third more CPU than the packing itself
// (docs/benchmarks.md, "Issue 19: export chunk memory"). Where the consumer is cairn's
// own and only writes the bytes to a file, nobody else can hold a chunk, so two buffers,
// one being written while the packer fills the other, are enough.
import { write, writev } from 'node:fs';
import { Readable } from 'node:stream';

/** The size of each of the two buffers, and of the Readable's chunks (export.ts). */
export const PACK_BUFFER = 256 * 1024;

/**
 * Packs the stream's archive into the buffers `next` hands out, yielding each filled part
 * (export.ts; image's exportImage, whose fills are async). It calls `next` for a buffer only
 * after yielding the previous one, that is once the write of the one before is done.
 * `reused` (writeExportTo): the buffers are two that take turns, and their consumer only
 * writes each part to a file, changes none and keeps them all until the pack has ended, so
 * the packer may still read a part it yielded (image's replay hashes it) until its next
 * fill. Otherwise each part is the consumer's to keep or change once yielded.
 */
export type DirectPack = (next: () => Buffer, reused: boolean) => Generator<Buffer> | AsyncGenerator<Buffer>;

interface Direct {
  pack: DirectPack;
  /** The size of the buffers it packs into. */
  bytes: number;
  /** Set by whichever path starts the packer first: the stream's own reads, or writeExportTo. */
  taken: boolean;
}

const directs = new WeakMap<Readable, Direct>();

/**
 * Registers `stream` as an export whose archive `pack` can produce into reused buffers.
 * Returns the claim the stream's own generator must make before it packs: false when
 * writeExportTo took the packing first.
 */
function registerDirect(stream: Readable, pack: DirectPack, bytes: number): () => boolean {
  const direct: Direct = { pack, bytes, taken: false };
  directs.set(stream, direct);
  return () => {
    if (direct.taken) return false;
    direct.taken = true;
    return true;
  };
}

/**
 * The Readable of an export `pack` produces: each chunk a fresh `chunkBytes` buffer, since a
 * consumer may keep any of them; unless writeExportTo takes it first, unread, and packs it
 * into its two reused buffers instead.
 */
export function directStream(pack: DirectPack, chunkBytes: number): Readable {
  let claim = (): boolean => true;
  const chunks = async function* (): AsyncGenerator<Buffer> {
    if (claim()) yield* pack(() => Buffer.allocUnsafe(chunkBytes), false);
  };
  const stream = Readable.from(chunks(), { objectMode: false, highWaterMark: 1 });
  claim = registerDirect(stream, pack, chunkBytes);
  return stream;
}

/** `buf` written whole to `fd` (a short write continues where it stopped). */
async function writeAll(fd: number, buf: Uint8Array): Promise<void> {
  for (let off = 0; off < buf.length;) {
    off += await new Promise<number>((resolve, reject) => {
      write(fd, buf, off, buf.length - off, null, (err, n) => (err ? reject(err) : resolve(n)));
    });
  }
}

/** `bufs` written whole to `fd`, in order (a short write continues where it stopped). */
async function writevAll(fd: number, bufs: Uint8Array[]): Promise<void> {
  const left = [...bufs];
  while (left.length > 0) {
    let n = await new Promise<number>((resolve, reject) => {
      writev(fd, left, null, (err, written) => (err ? reject(err) : resolve(written)));
    });
    while (left.length > 0 && n >= left[0]!.length) n -= left.shift()!.length;
    if (n > 0) left[0] = left[0]!.subarray(n);
  }
}

/**
 * Writes an export stream to `fd` (a regular file or a blocking fd: writes go through the
 * thread pool). A stream fresh from exportChanges, exportOverlayUpper or exportTree on the
 * addon's packer, not yet read, is packed straight into two reused buffers, one written
 * while the packer fills the other; any other Readable (the pure-JS path, an image
 * export, a stream already read from) is written as it comes, small chunks gathered. The bytes are the same
 * either way. The stream is destroyed at the end, success or not, so whatever its
 * producer holds (a driver's mounts for its diff) is released on its 'close'.
 */
export async function writeExportTo(stream: Readable, fd: number): Promise<void> {
  const direct = directs.get(stream);
  try {
    if (direct !== undefined && !direct.taken && !stream.readableDidRead && !stream.destroyed) {
      direct.taken = true;
      const buffers = [Buffer.allocUnsafe(0), Buffer.allocUnsafe(0)];
      let turn = 0;
      // The packer refills a buffer only after the write of the chunk it last held is done:
      // `next` is called when the generator resumes, after the loop awaited that write.
      const next = (): Buffer => {
        turn ^= 1;
        if (buffers[turn]!.length === 0) buffers[turn] = Buffer.allocUnsafe(direct.bytes);
        return buffers[turn]!;
      };
      let pending: Promise<void> = Promise.resolve();
      try {
        for await (const chunk of direct.pack(next, true)) {
          await pending;
          pending = writeAll(fd, chunk);
        }
      } finally {
        await pending.catch(() => undefined);
      }
      await pending;
      return;
    }
    // Other streams (an image export) come in small chunks too (512-byte headers,
    // padding, small files): gathered up to PACK_BUFFER bytes per writev.
    let batch: Uint8Array[] = [];
    let bytes = 0;
    for await (const chunk of stream) {
      batch.push(chunk as Uint8Array);
      bytes += (chunk as Uint8Array).length;
      if (bytes >= PACK_BUFFER) {
        await writevAll(fd, batch);
        batch = [];
        bytes = 0;
      }
    }
    if (batch.length > 0) await writevAll(fd, batch);
  } finally {
    stream.destroy();
  }
}
