import { readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CairnError, fsyncDir, isValidId, writeFileAtomic } from '@cairnfs/core';

/** What the btrfs driver remembers about a layer besides its subvolume. */
export interface LayerMeta {
  /** The layer it was snapshotted from, or null for a fresh subvolume. */
  parent: string | null;
  /** `image` layers (create) get the subvolume read-only flag once their applyDiff is done; `container` layers never. */
  kind: 'image' | 'container';
  /** The qgroup limit (max referenced bytes) set on the subvolume, when it has one. */
  sizeBytes?: number;
}

/** Writes `meta` durably (see writeFileAtomic): a crash leaves the old record or the new. */
export async function writeMeta(path: string, meta: LayerMeta): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(meta));
}

export async function readMeta(path: string): Promise<LayerMeta> {
  let parsed: Partial<LayerMeta>;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8')) as Partial<LayerMeta>;
  } catch (err) {
    throw new CairnError('ERR_PREREQUISITES',
      `btrfs layer metadata ${path} is unreadable (${String(err)}); restore it from a backup or remove the layer's subvolume`,
      { subject: path, cause: err });
  }
  const parentOk = parsed.parent === null || isValidId(parsed.parent);
  const sizeOk = parsed.sizeBytes === undefined || (Number.isSafeInteger(parsed.sizeBytes) && parsed.sizeBytes > 0);
  if (!parentOk || (parsed.kind !== 'image' && parsed.kind !== 'container') || !sizeOk) {
    throw new CairnError('ERR_PREREQUISITES',
      `btrfs layer metadata ${path} is malformed; restore it from a backup or remove the layer's subvolume`, { subject: path });
  }
  return {
    parent: parsed.parent as string | null,
    kind: parsed.kind,
    ...(parsed.sizeBytes === undefined ? {} : { sizeBytes: parsed.sizeBytes }),
  };
}

export async function removeMeta(path: string): Promise<void> {
  await rm(path, { force: true });
  await fsyncDir(dirname(path)).catch(() => undefined);
}
