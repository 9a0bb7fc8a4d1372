import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { applyLayer, exportOverlayUpper } from '@cairn/core';
import type { Change } from '@cairn/core';
import { upperChanges } from './changes.js';
import type { Layout } from './layout.js';

/**
 * Native overlay diff: a layer's `diff/` *is* its changeset against its direct parent,
 * with overlayfs' whiteouts (0/0 char devices, `trusted.overlay.opaque=y`) in place of
 * the OCI `.wh.` names. Used only when the probe found the kernel writes plain
 * changesets (no redirect_dir, no metacopy) and only against the direct parent; the
 * driver falls back to core's NaiveDiff otherwise.
 */
export class NativeDiff {
  constructor(private readonly layout: Layout, private readonly userXattr = false) {}

  diff(id: string): Promise<Readable> {
    return Promise.resolve(exportOverlayUpper(this.layout.diffDir(id)));
  }

  /** Writes the tar straight into `diff/`, turning `.wh.` entries into overlay whiteouts. */
  applyDiff(id: string, tar: Readable | AsyncIterable<Uint8Array>): Promise<number> {
    return applyLayer(this.layout.diffDir(id), tar, { whiteouts: 'overlay' });
  }

  changes(id: string, lowers: readonly string[]): Promise<Change[]> {
    return upperChanges(this.layout.diffDir(id), this.layout.absoluteLowers(lowers), this.userXattr);
  }

  /** Bytes of regular-file content in `diff/`, each hardlinked inode counted once (moby's directory.Size). */
  diffSize(id: string): Promise<number> {
    return regularFileBytes(this.layout.diffDir(id));
  }
}

export async function regularFileBytes(root: string): Promise<number> {
  const seen = new Set<bigint>();
  let total = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        await walk(path);
      } else if (entry.isFile()) {
        const st = await lstat(path, { bigint: true });
        if (st.nlink > 1n) {
          if (seen.has(st.ino)) continue;
          seen.add(st.ino);
        }
        total += Number(st.size);
      }
    }
  };
  await walk(root);
  return total;
}
