// Byte-exact layer export in the addon (native/split_replay.cc).
import { native } from './native.js';

/** What a {@link SplitReplay} wrote so far; `digest` (hex sha256 of every byte) once `done`. */
export interface SplitReplayState {
  done: boolean;
  bytes: number;
  digest: string;
}

/**
 * A layer tar rebuilt from its tar-split file (image's format, gzipped) and the layer's
 * files under a root, written into caller buffers on the libuv pool. The first `fill`
 * checks every recorded file (beneath the root, no link followed, a regular file of the
 * recorded size) before it writes a byte; each file is then read only through an fd
 * checked the same way. `fill` resolves to the bytes written, 0 once the tar is complete;
 * failures are errors with `cairnCode` (ERR_INVALID_ARCHIVE: the record is corrupt or a
 * file changed; ERR_UNSAFE_ARCHIVE: a file is now a link, device or directory) or
 * Node-style errno errors with `entry`. Await each `fill` before the next; `close()`
 * releases it (the fds stay the caller's).
 */
export interface SplitReplay {
  /**
   * The check the first `fill` makes, on the pool now: for a caller that wants it done
   * ahead of its first fill (an image export checks the next layer while one streams).
   * Rejects as `fill` would. Done once; a later `fill` does not repeat it.
   */
  verify(): Promise<void>;
  /**
   * With `lagHash`, the hash of what this fill wrote may go on after it resolves, until the
   * next fill (the last one, resolving to 0, waits for all of it): the caller must neither
   * change nor free `buffer` until its next fill or close() (image's exportImage through
   * writeExportTo, whose two buffers are only written to a file). Without it, every byte is
   * hashed before the promise settles and the buffer is the caller's at once.
   */
  fill(buffer: Uint8Array, lagHash?: boolean): Promise<number>;
  digest(): SplitReplayState;
  close(): void;
}

/**
 * Opens a replay of the split file `splitFd` (read with pread from offset 0) over the
 * directory `rootFd`. With `expectedBytes` (the tar's size recorded at import), a split
 * that would rebuild another size is ERR_INVALID_ARCHIVE at the first `fill`, before any
 * output, and no fill ever goes past that size.
 */
export function openSplitReplay(rootFd: number, splitFd: number, expectedBytes?: number): SplitReplay {
  return new native.SplitReplay(rootFd, splitFd, expectedBytes);
}
