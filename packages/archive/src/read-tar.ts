import type { Readable } from 'node:stream';
import type { TarEntry } from './entry.js';
import { TarParser } from './tar-parser.js';

/** One entry of {@link readTar}: its header and its content. */
export interface TarItem {
  header: TarEntry;
  /**
   * The entry's stored content, in order, as it streams in. For sparse files these are
   * the bytes of `header.sparse.segments`, concatenated in map order (holes are not
   * materialised). Read it before asking for the next entry; whatever is left unread is
   * skipped when the iteration moves on.
   */
  body: AsyncIterable<Buffer>;
}

type Event = { kind: 'entry'; entry: TarEntry } | { kind: 'data'; chunk: Buffer } | { kind: 'end' };

/**
 * Reads a tar stream entry by entry (ustar, GNU, PAX, v7; see TarParser). Nothing is
 * buffered beyond the current input chunk, so a consumer that stops pulling stops the
 * input (backpressure). Corrupt or truncated input throws `ERR_INVALID_ARCHIVE`. After
 * the end-of-archive marker the rest of the input is drained, so the producer finishes.
 */
export async function* readTar(input: Readable | AsyncIterable<Uint8Array>): AsyncGenerator<TarItem, void, undefined> {
  let queue: Event[] = [];
  let next = 0;
  const parser = new TarParser({
    entry: (entry) => queue.push({ kind: 'entry', entry }),
    data: (chunk) => queue.push({ kind: 'data', chunk }),
    end: () => queue.push({ kind: 'end' }),
  });
  const source = (input as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  let inputDone = false;

  const take = async (): Promise<Event | undefined> => {
    while (next >= queue.length) {
      if (inputDone) return undefined;
      queue = [];
      next = 0;
      const r = await source.next();
      if (r.done) {
        inputDone = true;
        parser.finish();
      } else {
        parser.write(asBuffer(r.value));
      }
    }
    return queue[next++];
  };

  try {
    for (;;) {
      const ev = await take();
      if (ev === undefined) break;
      if (ev.kind !== 'entry') continue;
      let ended = false;
      const body: AsyncIterable<Buffer> = {
        async *[Symbol.asyncIterator]() {
          while (!ended) {
            const e = await take();
            if (e === undefined || e.kind === 'end') {
              ended = true;
              return;
            }
            if (e.kind === 'data') yield e.chunk;
          }
        },
      };
      yield { header: ev.entry, body };
      while (!ended) {
        const e = await take();
        if (e === undefined || e.kind === 'end') ended = true;
      }
    }
  } finally {
    // Stopping early (break/throw in the consumer) releases the input.
    if (!inputDone) await source.return?.();
  }
}

export function asBuffer(chunk: Uint8Array | string): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (typeof chunk === 'string') return Buffer.from(chunk);
  return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}
