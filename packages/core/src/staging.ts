import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { mkdir, readdir, rename, rmdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsyncPath, removeTree, renameDurable, replaceFile } from '@cairnfs/sys';
import { isValidId } from './ids.js';
import { isProcessAlive, ownerOfToken, ownerToken } from './proc.js';
import type { ProcessIdentity } from './proc.js';
import type { StoreLocks } from './storelock.js';

/**
 * Layers become visible atomically: a driver builds a layer under
 * `${home}/.staging/`, then renames it into place. Removal goes the other way: rename
 * into `${home}/.trash/` (the layer is gone for `exists()` at that instant), then
 * reclaim the disk. Layer ids cannot start with '.', so these names never clash with a
 * layer. Whatever is left in either place after a crash is swept when a driver opens.
 *
 * Several processes share a home, so an entry is named after the layer and the process
 * that made it, `<id>@<pid>.<start>@<random>` ('@' is never in an id): a sweep removes
 * only what a dead process left (see proc.ts for why the start time), and, given the
 * store's locks, only while it can take that layer's lock.
 */
export const STAGING_DIR = '.staging';
export const TRASH_DIR = '.trash';

/** A fresh name for work in progress on layer `id` by this process (see above). */
export function ownedName(id: string): string {
  return `${id}@${ownerToken()}@${randomBytes(6).toString('hex')}`;
}

/**
 * The layer and owner an {@link ownedName} names; both null for names of another shape
 * (left by an older cairn, whose owner cannot be known: treated as dead).
 */
export function parseOwnedName(name: string): { id: string | null; owner: ProcessIdentity | null } {
  const parts = name.split('@');
  if (parts.length !== 3) return { id: null, owner: null };
  return { id: isValidId(parts[0]!) ? parts[0]! : null, owner: ownerOfToken(parts[1]!) };
}

/** True when the process that made `name` (an {@link ownedName}) is still running. */
export function isOwnerAlive(name: string): boolean {
  const { owner } = parseOwnedName(name);
  return owner !== null && isProcessAlive(owner);
}

function uniqueName(id: string): string {
  return ownedName(id);
}

/** Makes and returns a fresh, empty staging directory for `id`. */
export async function makeStagingDir(home: string, id: string, mode = 0o700): Promise<string> {
  // Synchronous: two local mkdirs cost microseconds, two pool round trips ~90 µs of CPU.
  const parent = join(home, STAGING_DIR);
  mkdirSync(parent, { recursive: true, mode: 0o700 });
  const path = join(parent, uniqueName(id));
  mkdirSync(path, { mode });
  return path;
}

/**
 * Removes a layer's mount point once the layer is gone: rmdir, never a recursive removal,
 * which would descend into whatever is still mounted there (a stale mount, another
 * process's) and delete that filesystem's files. A dir that is busy or not empty stays;
 * it is inert, and the layer's removal has happened either way.
 */
export async function removeMountPoint(path: string): Promise<void> {
  await rmdir(path).catch(() => undefined);
}

/** fsyncs a directory so that a rename or create inside it survives power loss. */
export function fsyncDir(path: string): Promise<void> {
  return fsyncPath(path, true);
}

/** fsyncs a file (by path) so its content is durable before the layer is reported done. */
export function fsyncFile(path: string): Promise<void> {
  return fsyncPath(path, false);
}

/**
 * Renames a staged directory to its final path and makes the rename durable. The
 * final path must not exist (rename(2) would replace an empty directory silently, so
 * callers check existence under their per-id lock first).
 */
export function commitStaged(staged: string, finalPath: string): Promise<void> {
  return renameDurable(staged, finalPath, true);
}

/**
 * Moves `path` out of sight into the trash (one atomic rename, made durable) and returns
 * where it went; the caller deletes it (perhaps after letting go of the store lock). What
 * a crash leaves there is swept once its owner is gone.
 */
export async function moveToTrash(home: string, path: string, id: string): Promise<string> {
  const trash = join(home, TRASH_DIR);
  await mkdir(trash, { recursive: true, mode: 0o700 });
  const target = join(trash, uniqueName(id));
  await rename(path, target);
  await fsyncDir(dirname(path)).catch(() => undefined);
  return target;
}

/**
 * Moves `path` out of sight into the trash (atomic), then deletes it. If deletion fails
 * the layer is still gone; the next sweep reclaims the space.
 */
export async function discardDir(home: string, path: string, id: string): Promise<void> {
  const target = await moveToTrash(home, path, id);
  await removeTree(target).catch(() => undefined);
}

export interface SweepOptions {
  /** Undoes what plain rm cannot (unmount, delete a subvolume) for a leftover path, before it is deleted. */
  beforeDelete?: (path: string) => Promise<void>;
  /**
   * The home's locks: a leftover of layer X is then swept only while the lock of X can be
   * taken at once (else a live operation on X owns it, whatever its name says).
   */
  locks?: StoreLocks;
  /** Leftovers to keep although their owner is gone (the driver still needs them for a repair). */
  keep?: (path: string) => boolean;
}

/**
 * Deletes what dead processes left in `.staging/` and `.trash/` (interrupted creates,
 * applies and removes); entries of live processes stay. Returns the paths swept.
 */
export async function sweepLeftovers(home: string, opts: SweepOptions = {}): Promise<string[]> {
  const swept: string[] = [];
  for (const sub of [STAGING_DIR, TRASH_DIR]) {
    const dir = join(home, sub);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      const path = join(dir, name);
      if (isOwnerAlive(name) || opts.keep?.(path)) continue;
      const sweep = async () => {
        if (opts.beforeDelete) await opts.beforeDelete(path);
        await removeTree(path);
        swept.push(path);
      };
      const { id } = parseOwnedName(name);
      if (opts.locks && id !== null) await opts.locks.tryLayer(id, `sweep ${path}`, sweep);
      else await sweep();
    }
  }
  return swept;
}

/**
 * Writes a small file so that a crash leaves either the old content or the new, never a
 * torn file: a hidden temp sibling (`.<name>.tmp`, overwritten by the next attempt, so
 * crashes leave at most one), fsynced, renamed over the target, the directory fsynced.
 * Callers serialise writes of one path (their layer or store lock). `durable: false`
 * skips both fsyncs, for records a power loss voids anyway (mount holds): still atomic
 * for every process that reads them.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600, opts: { durable?: boolean } = {}): Promise<void> {
  // One pool job for the whole write (sys replaceFile): ~45 µs of CPU per pool round trip
  // made the 8 of open, write, fsync, close, rename and the directory's fsync add up.
  return replaceFile(path, data, mode, opts.durable ?? true);
}
