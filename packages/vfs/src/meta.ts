import { RecordFile, isValidId } from '@cairnfs/core';

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
  /**
   * The id map (core's idMappingsKey text) the layer's files are stored shifted by: set by
   * applyDiff with idMappings, or when a chown-copy fallback shifted a container layer in
   * place; inherited by layers created on it. diff maps them back to container ids.
   */
  idmap?: string;
}

function checkMeta(raw: unknown): LayerMeta | string {
  const m = (raw ?? {}) as Partial<LayerMeta>;
  if (!(m.parent === null || isValidId(m.parent))) return 'parent is not a layer id';
  if (m.kind !== 'image' && m.kind !== 'container') return 'kind is neither image nor container';
  if (typeof m.sealed !== 'boolean') return 'sealed is not a boolean';
  if (m.idmap !== undefined && typeof m.idmap !== 'string') return 'idmap is not a string';
  return {
    parent: m.parent, kind: m.kind, sealed: m.sealed, ...(typeof m.replacing === 'string' ? { replacing: m.replacing } : {}),
    ...(typeof m.idmap === 'string' ? { idmap: m.idmap } : {}),
  };
}

/** `meta/<id>.json`: written atomically, read back validated. */
export const layerMeta = new RecordFile<LayerMeta>('vfs layer metadata', checkMeta, "restore it or remove the layer's directory");
