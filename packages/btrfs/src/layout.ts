import { join } from 'node:path';
import { isOwnerAlive, isValidId, ownedName } from '@cairnfs/core';

/**
 * Where the btrfs driver keeps things, as Docker's btrfs graphdriver does:
 *
 * ```
 * ${root}/btrfs/
 *   subvolumes/<id>            one btrfs subvolume per layer (snapshots of their parents)
 *   subvolumes/.staging-<id>@<owner>@<rand>   a create in progress (renamed to <id> when complete)
 *   subvolumes/.trash-<id>@<owner>@<rand>     a removed layer whose subvolume is being destroyed
 *   subvolumes/.undo-<id>      the layer as it was, while an applyDiff changes it (under the layer's lock)
 *   meta/<id>.json             cairn's own record: parent, kind, size quota
 *   .cairn-lock  .cairn/       the store lock, layer locks and mount holds (core's StoreLocks)
 * ```
 *
 * `<owner>` is the pid and start time of the process doing the work (core's ownedName):
 * an open sweeps staging and trash subvolumes of dead processes only.
 *
 * Staging and trash live *inside* subvolumes/ because a subvolume can only be renamed
 * within the subvolume that holds it, and rename is what makes create and remove atomic.
 * Layer ids never start with '.', so these names cannot clash with a layer.
 */
export class BtrfsLayout {
  readonly subvolumesDir: string;
  readonly metaDir: string;

  constructor(readonly home: string) {
    this.subvolumesDir = join(home, 'subvolumes');
    this.metaDir = join(home, 'meta');
  }

  /** The subvolume (and the path `get` returns) of a layer. */
  subvolume(id: string): string {
    return join(this.subvolumesDir, id);
  }

  metaFile(id: string): string {
    return join(this.metaDir, `${id}.json`);
  }

  /** A fresh name under subvolumes/ for a create in progress. */
  stagingName(id: string): string {
    return `${STAGING_PREFIX}${ownedName(id)}`;
  }

  /** The snapshot under subvolumes/ that keeps a layer as it was while an applyDiff changes it. */
  undoName(id: string): string {
    return `${UNDO_PREFIX}${id}`;
  }

  /** A fresh name under subvolumes/ for a layer being destroyed. */
  trashName(id: string): string {
    return `${TRASH_PREFIX}${ownedName(id)}`;
  }
}

export const STAGING_PREFIX = '.staging-';
export const TRASH_PREFIX = '.trash-';
export const UNDO_PREFIX = '.undo-';

/** The layer id an undo snapshot (see undoName) belongs to, or null for any other name. */
export function idOfUndoName(name: string): string | null {
  if (!name.startsWith(UNDO_PREFIX)) return null;
  const id = name.slice(UNDO_PREFIX.length);
  return isValidId(id) ? id : null;
}

/** True for staging and trash names under subvolumes/ (work in progress, or what a dead process left). */
export function isLeftoverName(name: string): boolean {
  return name.startsWith(STAGING_PREFIX) || name.startsWith(TRASH_PREFIX);
}

/** True for a staging or trash name whose process is gone (names of an older cairn carry no owner: gone too). */
export function isAbandonedName(name: string): boolean {
  if (name.startsWith(STAGING_PREFIX)) return !isOwnerAlive(name.slice(STAGING_PREFIX.length));
  if (name.startsWith(TRASH_PREFIX)) return !isOwnerAlive(name.slice(TRASH_PREFIX.length));
  return false;
}

/** The layer id a meta/ file name stands for, or null for anything else (temp files). */
export function idOfMetaFile(name: string): string | null {
  if (!name.endsWith('.json')) return null;
  const id = name.slice(0, -'.json'.length);
  return isValidId(id) ? id : null;
}
