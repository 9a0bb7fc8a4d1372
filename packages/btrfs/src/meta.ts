import { RecordFile, isValidId } from '@cairnfs/core';

/** What the btrfs driver remembers about a layer besides its subvolume. */
export interface LayerMeta {
  /** The layer it was snapshotted from, or null for a fresh subvolume. */
  parent: string | null;
  /** `image` layers (create) get the subvolume read-only flag once their applyDiff is done; `container` layers never. */
  kind: 'image' | 'container';
  /** The qgroup limit (max referenced bytes) set on the subvolume, when it has one. */
  sizeBytes?: number;
}

function checkMeta(raw: unknown): LayerMeta | string {
  const m = (raw ?? {}) as Partial<LayerMeta>;
  if (!(m.parent === null || isValidId(m.parent))) return 'parent is not a layer id';
  if (m.kind !== 'image' && m.kind !== 'container') return 'kind is neither image nor container';
  if (m.sizeBytes !== undefined && !(Number.isSafeInteger(m.sizeBytes) && m.sizeBytes > 0)) return 'sizeBytes is not a positive integer';
  return { parent: m.parent, kind: m.kind, ...(m.sizeBytes === undefined ? {} : { sizeBytes: m.sizeBytes }) };
}

/** `meta/<id>.json`: written atomically, read back validated. */
export const layerMeta = new RecordFile<LayerMeta>('btrfs layer metadata', checkMeta,
  "restore it from a backup or remove the layer's subvolume");
