import { join } from 'node:path';
import { assertValidId } from '@cairnfs/core';

/**
 * Docker's aufs layout under the driver home (`${root}/aufs`), kept exactly so a store
 * Docker wrote can be opened and one cairn writes can be handed back to Docker:
 *
 *   diff/<id>     the layer's own changes, deletions as plain `.wh.<name>` files,
 *                 a directory replaced wholesale marked by a `.wh..wh..opq` file,
 *                 aufs' bookkeeping in `.wh..wh.plnk/` and `.wh..wh.aufs`
 *   layers/<id>   the ancestors, one id a line, nearest first (the direct parent, then
 *                 the parent's own layers file); empty for a base layer. Its presence
 *                 is what makes a layer exist (as in moby's Exists).
 *   mnt/<id>      where the union is mounted
 *   .staging/ .trash/ .cairn-lock   (core's staging, removal and home lock)
 */
export class AufsLayout {
  constructor(readonly home: string) {}

  get diffRoot(): string {
    return join(this.home, 'diff');
  }

  get layersRoot(): string {
    return join(this.home, 'layers');
  }

  get mntRoot(): string {
    return join(this.home, 'mnt');
  }

  diffDir(id: string): string {
    assertValidId(id);
    return join(this.diffRoot, id);
  }

  layersFile(id: string): string {
    assertValidId(id);
    return join(this.layersRoot, id);
  }

  mntDir(id: string): string {
    assertValidId(id);
    return join(this.mntRoot, id);
  }
}

/** Parses a layers file: ids one a line, nearest ancestor first; blank lines ignored. */
export function parseAncestors(text: string): string[] {
  return text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

/** The layers file of a child of `parent` whose own ancestors are `parentAncestors`. */
export function formatAncestors(parent: string | null, parentAncestors: readonly string[]): string {
  if (parent === null) return '';
  return [parent, ...parentAncestors].map((id) => `${id}\n`).join('');
}

/** aufs' whiteout names, as moby's archive package names them. */
export const WH_PREFIX = '.wh.';
export const WH_META_PREFIX = '.wh..wh.';
export const WH_OPAQUE = '.wh..wh..opq';
