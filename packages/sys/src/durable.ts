// The store's small records, each written durably in one pool job (native/durable.cc):
// from JS every open, write, fsync and close is a pool round trip of its own.
import { native } from './native.js';

/** open, fsync, close of `path` (a directory with `isDirectory`). */
export function fsyncPath(path: string, isDirectory = false): Promise<void> {
  return native.fsyncPath(path, isDirectory);
}

/**
 * Replaces `path` with `data` atomically: written to the hidden sibling `.<name>.tmp`
 * (never through a symlink; truncated if a crash left one), renamed over `path`. With
 * `durable` the sibling is fsynced before the rename and the directory after it, so a
 * power loss leaves the old content or the new. A failure removes the sibling.
 */
export function replaceFile(path: string, data: string | Uint8Array, mode: number, durable: boolean): Promise<void> {
  return native.replaceFile(path, data, mode, durable);
}

/**
 * Creates each `files` entry (name → content) in the existing directory `dir`, none of
 * which may exist (never through a symlink), fsyncs each, then fsyncs `dir`. A failure
 * leaves the files made so far: `dir` is the caller's to discard.
 */
export function writeNewFiles(dir: string, files: ReadonlyArray<readonly [string, string | Uint8Array]>, mode = 0o600): Promise<void> {
  return native.writeNewFiles(dir, files.map(([n]) => n), files.map(([, d]) => d), mode);
}

/**
 * rename(2) made durable: the directory of `to` is fsynced after it; with `syncFrom`,
 * the directory `from` is fsynced before it (what was made inside it is on disk before
 * it appears under its new name).
 */
export function renameDurable(from: string, to: string, syncFrom = false): Promise<void> {
  return native.renameDurable(from, to, syncFrom);
}
