import { join } from 'node:path';
import { assertValidId } from '@cairnfs/core';

/**
 * Where the vfs driver keeps things under its home (`${root}/vfs`):
 *
 *   dir/<id>          the layer's full root filesystem (Docker's vfs layout)
 *   meta/<id>.json    what Docker keeps in its layer store instead: the parent, and
 *                     whether the layer is an image layer that has been sealed
 *   idmapped/<id>     mount point of a layer's id-mapped view, only while mounted
 *   idmapped-copies/<id>-<map hash>   chown copies of image layers (the fallback where
 *                     id-mapped mounts do not work), removed with their layer
 *   .staging/  .trash/  .cairn-lock   (core's staging, removal and home lock)
 *
 * Every path is built here from a validated id, so no caller string becomes a path
 * without passing assertValidId.
 */
export class VfsLayout {
  constructor(readonly home: string) {}

  get layersDir(): string {
    return join(this.home, 'dir');
  }

  get metaDir(): string {
    return join(this.home, 'meta');
  }

  layerPath(id: string): string {
    assertValidId(id);
    return join(this.layersDir, id);
  }

  get idmappedDir(): string {
    return join(this.home, 'idmapped');
  }

  get copiesDir(): string {
    return join(this.home, 'idmapped-copies');
  }

  /** Where the id-mapped view of a layer is mounted. */
  idmappedPath(id: string): string {
    assertValidId(id);
    return join(this.idmappedDir, id);
  }

  /** The chown copy of image layer `id` for the map whose hash is `hash`. */
  copyPath(id: string, hash: string): string {
    assertValidId(id);
    return join(this.copiesDir, `${id}-${hash}`);
  }

  metaPath(id: string): string {
    assertValidId(id);
    return join(this.metaDir, `${id}.json`);
  }

  /** The layer id of a metadata file name, or null for anything else (temp files). */
  idOfMetaFile(name: string): string | null {
    return name.endsWith('.json') && !name.startsWith('.') ? name.slice(0, -'.json'.length) : null;
  }
}
