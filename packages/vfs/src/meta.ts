import { readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CairnError, fsyncDir, isValidId, writeFileAtomic } from '@cairnfs/core';

/** What vfs remembers about a layer besides its files. */
export interface LayerMeta {
  /** The layer it was created on, or null. */
  parent: string | null;
  /** `image` layers (create) are sealed read-only after their applyDiff; `container` layers (createReadWrite) never. */
  kind: 'image' | 'container';
  /** True once an image layer's applyDiff finished: get() then hands out a read-only view. */
  sealed: boolean;
  /**
   * Set only while applyDiff swaps a staged copy into place: the staging directory's
   * name. If the process dies mid-swap, open() finishes or abandons the swap from this.
   */
  replacing?: string;
}

/** Writes `meta` durably (see writeFileAtomic): a crash leaves the old record or the new. */
export async function writeMeta(path: string, meta: LayerMeta): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(meta));
}

export async function readMeta(path: string): Promise<LayerMeta> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new CairnError('ERR_PREREQUISITES', `vfs layer metadata ${path} is unreadable (${String(err)}); restore it or remove the layer's directory`, { subject: path, cause: err });
  }
  const m = parsed as Partial<LayerMeta>;
  const parentOk = m.parent === null || isValidId(m.parent);
  if (!parentOk || (m.kind !== 'image' && m.kind !== 'container') || typeof m.sealed !== 'boolean') {
    throw new CairnError('ERR_PREREQUISITES', `vfs layer metadata ${path} is malformed; restore it or remove the layer's directory`, { subject: path });
  }
  return { parent: m.parent as string | null, kind: m.kind, sealed: m.sealed, ...(typeof m.replacing === 'string' ? { replacing: m.replacing } : {}) };
}

export async function removeMeta(path: string): Promise<void> {
  await rm(path, { force: true });
  await fsyncDir(dirname(path)).catch(() => undefined);
}
