import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { mkdir, open, readdir, rename, rm, unlink } from 'node:fs/promises';
import { basename, join, dirname } from 'node:path';

/**
 * Layers become visible atomically: a driver builds a layer under
 * `${home}/.staging/`, then renames it into place. Removal goes the other way: rename
 * into `${home}/.trash/` (the layer is gone for `exists()` at that instant), then
 * reclaim the disk. Layer ids cannot start with '.', so these names never clash with a
 * layer. Whatever is left in either place after a crash is swept when the driver opens.
 */
export const STAGING_DIR = '.staging';
export const TRASH_DIR = '.trash';

function uniqueName(id: string): string {
  return `${id}-${randomBytes(6).toString('hex')}`;
}

/** Makes and returns a fresh, empty staging directory for `id`. */
export async function makeStagingDir(home: string, id: string, mode = 0o700): Promise<string> {
  const parent = join(home, STAGING_DIR);
  await mkdir(parent, { recursive: true, mode: 0o700 });
  const path = join(parent, uniqueName(id));
  await mkdir(path, { mode });
  return path;
}

/** fsyncs a directory so that a rename or create inside it survives power loss. */
export async function fsyncDir(path: string): Promise<void> {
  const handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** fsyncs a file (by path) so its content is durable before the layer is reported done. */
export async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, fsConstants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Renames a staged directory to its final path and makes the rename durable. The
 * final path must not exist (rename(2) would replace an empty directory silently, so
 * callers check existence under their per-id lock first).
 */
export async function commitStaged(staged: string, finalPath: string): Promise<void> {
  await fsyncDir(staged);
  await rename(staged, finalPath);
  await fsyncDir(dirname(finalPath));
}

/**
 * Moves `path` out of sight into the trash (atomic), then deletes it. If deletion fails
 * the layer is still gone; the next sweep reclaims the space.
 */
export async function discardDir(home: string, path: string, id: string): Promise<void> {
  const trash = join(home, TRASH_DIR);
  await mkdir(trash, { recursive: true, mode: 0o700 });
  const target = join(trash, uniqueName(id));
  await rename(path, target);
  await fsyncDir(dirname(path)).catch(() => undefined);
  await rm(target, { recursive: true, force: true }).catch(() => undefined);
}

/**
 * Deletes leftovers of interrupted creates and removes. `beforeDelete` lets a driver
 * undo what plain rm cannot (unmount, delete a subvolume) for each leftover path.
 * Returns the paths swept.
 */
export async function sweepLeftovers(home: string, beforeDelete?: (path: string) => Promise<void>): Promise<string[]> {
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
      if (beforeDelete) await beforeDelete(path);
      await rm(path, { recursive: true, force: true });
      swept.push(path);
    }
  }
  return swept;
}

/**
 * Writes a small file so that a crash leaves either the old content or the new, never a
 * torn file: a hidden temp sibling (`.<name>.tmp`, overwritten by the next attempt, so
 * crashes leave at most one), fsynced, renamed over the target, the directory fsynced.
 * Callers serialise writes of one path (their per-id or store lock).
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp`);
  const handle = await open(tmp, 'w', mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dirname(path));
}
