// zstd blobs decoded in the addon (native/zstd.cc) through a libzstd found at run time.
import { native } from './native.js';

/**
 * Where the addon found a zstd decoder: `'node'` (the one Node 22.15 and later carry and
 * export), `'libzstd.so.1'` (the system's), or null when neither is there (or with
 * CAIRN_ZSTD_JS=1); callers then need a decoder of their own.
 */
export function zstdLibrary(): string | null {
  // Read at each call, so tests can take the fallback in-process on a machine that has one.
  return process.env.CAIRN_ZSTD_JS === '1' ? null : native.zstdLibrary();
}

/** A zstd stream that is corrupt, truncated, or asks for a window over 128 MiB. */
export class ZstdDataError extends Error {
  override name = 'ZstdDataError';
}

/** Output chunk size: the same hand-off size as the gzip path (docs/benchmarks.md, issue 19). */
const DEFAULT_CHUNK_BYTES = 512 * 1024;

/**
 * The decompressed bytes of a zstd stream (one frame or several back to back), decoded on
 * the libuv pool in chunks of `chunkBytes`. Memory stays bounded: one output chunk per call
 * and the decoder's window, which is refused above 128 MiB (zstd's own default limit).
 * Throws {@link ZstdDataError} for bad data, including a stream that ends inside a frame.
 * Needs {@link zstdLibrary} to be non-null.
 */
export async function* zstdDecompressed(input: AsyncIterable<Uint8Array>, chunkBytes = DEFAULT_CHUNK_BYTES): AsyncGenerator<Buffer> {
  const decoder = native.zstdCreate();
  const decode = async (chunk: Uint8Array, offset: number, out: Buffer): Promise<[number, number, number]> => {
    try {
      return await native.zstdDecode(decoder, chunk, offset, out);
    } catch (err) {
      throw new ZstdDataError((err as Error).message.replace(/^cairn_sys: /, ''), { cause: err });
    }
  };
  let hint = -1; // zstd's hint after the last call; 0 = at a frame's end
  let outputFull = false; // the last call filled its chunk, so the decoder may hold more
  const drain = async function* (chunk: Uint8Array): AsyncGenerator<Buffer> {
    let offset = 0;
    while (offset < chunk.length || outputFull) {
      const out = Buffer.allocUnsafe(chunkBytes);
      const [read, written, next] = await decode(chunk, offset, out);
      offset += read;
      hint = next;
      outputFull = written === out.length;
      if (written > 0) yield outputFull ? out : out.subarray(0, written);
      if (read === 0 && written === 0) break; // no progress without more input
    }
  };
  try {
    for await (const chunk of input) yield* drain(chunk);
    yield* drain(new Uint8Array(0));
    if (hint !== 0) throw new ZstdDataError('zstd: the stream ends inside a frame (truncated)');
  } finally {
    native.zstdFree(decoder);
  }
}
