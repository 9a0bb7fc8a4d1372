import { join } from 'node:path';
import { isValidId } from '@cairnfs/core';

/**
 * Names and paths of the zfs driver, as moby's zfs graphdriver lays them out; pure, no I/O.
 *
 * - layer `<id>` is the dataset `<fsname>/<id>`;
 * - a child `<c>` of `<p>` is a clone of the snapshot `<fsname>/<p>@<c>` (one snapshot per
 *   child, named after it, so removing the child can take its snapshot along);
 * - a mounted layer lives at `<home>/graph/<id>`.
 *
 * Ids are validated before they get here: `[A-Za-z0-9_.-]`, never starting with `.`/`-`,
 * which are all legal in ZFS dataset and snapshot names.
 */
export class ZfsLayout {
  readonly graphDir: string;

  constructor(readonly home: string, readonly fsname: string) {
    this.graphDir = join(home, 'graph');
  }

  dataset(id: string): string {
    return `${this.fsname}/${id}`;
  }

  /** The snapshot of `parent` that `child` is cloned from. */
  originSnapshot(parent: string, child: string): string {
    return `${this.fsname}/${parent}@${child}`;
  }

  mountPath(id: string): string {
    return join(this.graphDir, id);
  }

  /** The layer id of `<fsname>/<id>`, or null for any other name (the parent itself, deeper datasets, foreign names). */
  idOfDataset(name: string): string | null {
    const prefix = `${this.fsname}/`;
    if (!name.startsWith(prefix)) return null;
    const id = name.slice(prefix.length);
    return isValidId(id) ? id : null;
  }

  /** `{ parent, child }` of a snapshot named `<fsname>/<parent>@<child>`, or null. */
  parseSnapshot(name: string): { parent: string; child: string } | null {
    const at = name.indexOf('@');
    if (at < 0) return null;
    const parent = this.idOfDataset(name.slice(0, at));
    const child = name.slice(at + 1);
    if (parent === null || !isValidId(child)) return null;
    return { parent, child };
  }
}
