import { createGunzip } from 'node:zlib';
import { Readable } from 'node:stream';
import { Decompress } from 'fzstd';
import { CairnError } from '@cairnfs/core';
import { ZstdDataError, zstdDecompressed, zstdLibrary } from '@cairnfs/sys';

export type Compression = 'none' | 'gzip' | 'zstd';

/** Names the compression of a blob from its first bytes (gzip 1f 8b, zstd 28 b5 2f fd). */
export function detectCompression(head: Uint8Array): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zstd';
  return 'none';
}

/**
 * The uncompressed bytes of a layer blob, whatever its compression (sniffed, not taken
 * from the media type: docker save's layer.tar and mislabelled blobs exist). gzip runs
 * in zlib's thread pool, so it overlaps the JS-side hashing and applying; zstd in the
 * addon's, through a libzstd found at run time (Node's own from 22.15, else the system's),
 * and through fzstd (pure JS, 2-3× the CPU of a whole import) where there is none.
 */
export interface DecompressLimit {
  /** Most bytes the stream may decompress to; past it, ERR_INVALID_ARCHIVE (a decompression bomb). */
  maxBytes?: number;
  /** What is being decompressed, for the message (e.g. "layer sha256:…"). */
  what?: string;
}

/**
 * The default bound on what one layer (or one compressed image archive) may decompress
 * to: 64 GiB, several times the largest layers seen in public registries, so no real
 * image meets it, while a few-MB gzip or zstd bomb is stopped long before it fills a disk.
 */
export const DEFAULT_MAX_UNCOMPRESSED_BYTES = 64 * 2 ** 30;

function overLimit(limit: Required<DecompressLimit>): CairnError {
  return new CairnError('ERR_INVALID_ARCHIVE',
    `${limit.what} decompresses to more than ${limit.maxBytes} bytes (maxUncompressedBytes): refused as a decompression bomb. ` +
    'If the image is genuine, import it with a larger maxUncompressedBytes.', { subject: limit.what });
}

export async function* decompressed(input: AsyncIterable<Uint8Array>, opts: DecompressLimit = {}): AsyncGenerator<Buffer> {
  const limit = { maxBytes: opts.maxBytes ?? DEFAULT_MAX_UNCOMPRESSED_BYTES, what: opts.what ?? 'a blob' };
  let produced = 0;
  // Counted as each piece is produced (for zstd inside fzstd's block callback), so that a
  // bomb is stopped within one block, never buffered whole.
  const count = (n: number) => {
    produced += n;
    if (produced > limit.maxBytes) throw overLimit(limit);
  };
  for await (const chunk of decompressedUnbounded(input, count)) yield chunk;
}

async function* decompressedUnbounded(input: AsyncIterable<Uint8Array>, count: (n: number) => void): AsyncGenerator<Buffer> {
  const it = input[Symbol.asyncIterator]();
  try {
    yield* decompressIterator(it, count);
  } finally {
    // However this ends (a consumer that stops after the first chunk included), the source
    // is closed: a network stream must not stay open, a generator's cleanup must run.
    await it.return?.();
  }
}

/**
 * `src` with its first non-empty chunk already read (to name its compression) and put back
 * in front; closing the returned iterator closes `src`.
 */
export async function peeked(src: AsyncIterator<Uint8Array>): Promise<{ kind: Compression; it: AsyncIterator<Uint8Array> }> {
  let first = await src.next();
  while (!first.done && first.value.length === 0) first = await src.next();
  let head: Uint8Array | undefined = first.done ? undefined : first.value;
  const it: AsyncIterator<Uint8Array> = {
    next: async () => {
      if (head === undefined) return first.done ? { done: true, value: undefined } : src.next();
      const value = head;
      head = undefined;
      return { done: false, value };
    },
    return: async () => { head = undefined; await src.return?.(); return { done: true, value: undefined }; },
  };
  return { kind: head ? detectCompression(head) : 'none', it };
}

async function* decompressIterator(src: AsyncIterator<Uint8Array>, count: (n: number) => void): AsyncGenerator<Buffer> {
  const { kind, it } = await peeked(src);
  const rest: AsyncIterable<Uint8Array> = { [Symbol.asyncIterator]: () => it };
  async function* all(): AsyncGenerator<Buffer> {
    for await (const c of rest) yield Buffer.from(c.buffer, c.byteOffset, c.byteLength);
  }
  if (kind === 'none') {
    for await (const c of all()) { count(c.length); yield c; }
  } else if (kind === 'gzip') {
    // 512 KiB output chunks instead of zlib's 16 KiB: a 32nd of the hand-offs between
    // zlib's pool thread and this one, and of the per-chunk work downstream (128 KiB
    // measured ~25 % less CPU than 16 KiB; 512 KiB another ~10 % of a gzip import and
    // ~15 % of its event-loop time, docs/benchmarks.md, issue 19).
    const gunzip = createGunzip({ chunkSize: 512 * 1024 });
    const src = Readable.from(all());
    src.on('error', (e) => gunzip.destroy(e));
    src.pipe(gunzip);
    try {
      for await (const c of gunzip) { count((c as Buffer).length); yield c as Buffer; }
    } catch (err) {
      if (err instanceof CairnError || (err as Error).name === 'AbortError') throw err; // the source's own failure, not corruption
      throw new CairnError('ERR_INVALID_ARCHIVE', `a gzip layer blob is corrupt or truncated: ${(err as Error).message}`, { cause: err });
    } finally {
      src.destroy();
    }
  } else if (zstdLibrary() !== null) {
    try {
      for await (const c of zstdDecompressed(all())) { count(c.length); yield c; }
    } catch (err) {
      if (!(err instanceof ZstdDataError)) throw err; // the source's own failure, or the bound
      throw new CairnError('ERR_INVALID_ARCHIVE', `a zstd layer blob is corrupt or truncated: ${err.message}`, { cause: err });
    }
  } else {
    let out: Buffer[] = [];
    const z = new Decompress((chunk) => { count(chunk.length); out.push(Buffer.from(chunk)); /* a copy: fzstd may reuse its window buffer */ });
    try {
      for await (const c of all()) {
        z.push(c);
        if (out.length) { const ready = out; out = []; yield* ready; }
      }
      z.push(new Uint8Array(0), true);
    } catch (err) {
      if (err instanceof CairnError || (err as Error).name === 'AbortError') throw err;
      throw new CairnError('ERR_INVALID_ARCHIVE', `a zstd layer blob is corrupt or truncated: ${(err as Error).message}`, { cause: err });
    }
    yield* out;
  }
}
