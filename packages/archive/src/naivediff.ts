import type { Readable } from 'node:stream';
import {
  CairnError, assertValidId, normalizeParent, type ApplyDiffOptions, type Change, type IdMappings, type StorageDriver,
} from '@cairnfs/core';
import { applyLayer } from './apply.js';
import type { WhiteoutMode } from './apply-options.js';
import { changesBetween, diffSizeOf, type ChangesOptions } from './changes.js';
import { exportChanges, exportTree } from './export.js';

/** What NaiveDiff needs from a driver: mounting, and the parent each layer was created on. */
export type NaiveDiffHost = Pick<StorageDriver, 'get' | 'put'> & {
  /** The parent the layer was created on, or null for a base layer. */
  parentOf(id: string): Promise<string | null>;
  /**
   * The id map the layer's files are stored shifted by, null when they are in container
   * ids. Drivers that can store layers shifted (applyDiff with idMappings) give it; diffs
   * then mount both sides through that map (one id space) and pack owners mapped back.
   */
  storedIdMap?(id: string): Promise<IdMappings | null>;
};

export interface NaiveDiffOptions {
  /** How applyDiff materialises whiteouts in the layer; drivers with full-copy layers use 'delete' (the default). */
  whiteouts?: WhiteoutMode;
  /**
   * For backends with coarse timestamps: the epoch second from which a file whose
   * metadata is unchanged must still be compared by content (see ChangesOptions); null
   * for none. Called once per diff/changes/diffSize with the layer id.
   */
  contentCheckSince?: (id: string) => Promise<number | null>;
}

/**
 * moby's NaiveDiffDriver: diff, changes, applyDiff and diffSize for drivers that have no
 * native notion of "what this layer changed", by mounting the layer and its parent and
 * comparing the two trees (see changesBetween). Every method validates ids first and
 * puts back every layer it got, also when it fails.
 *
 * `parent` undefined means "the layer's own parent"; null (or '') means "compare with
 * an empty tree", i.e. the whole layer.
 */
export class NaiveDiff {
  private readonly whiteouts: WhiteoutMode;
  private readonly contentCheckSince: ((id: string) => Promise<number | null>) | null;

  constructor(private readonly driver: NaiveDiffHost, opts: NaiveDiffOptions = {}) {
    this.whiteouts = opts.whiteouts ?? 'delete';
    this.contentCheckSince = opts.contentCheckSince ?? null;
  }

  /**
   * The OCI changeset as a tar stream. Both layers stay mounted while the stream is
   * being read and are put back once it ends, fails or is destroyed by the consumer.
   */
  async diff(id: string, parent?: string | null): Promise<Readable> {
    const mounted = await this.mountPair(id, parent);
    let stream: Readable;
    try {
      const idMappings = mounted.idMap;
      if (mounted.parentDir === null) {
        // A whole layer: the same bytes as exportChanges of every path, without the list.
        stream = await exportTree(mounted.layerDir, { idMappings });
      } else {
        const changes = await changesBetween(mounted.layerDir, mounted.parentDir, await this.changesOptions(id));
        stream = exportChanges(mounted.layerDir, changes, { idMappings });
      }
    } catch (err) {
      await mounted.release();
      throw err;
    }
    // 'close' follows 'end', 'error' and destroy() alike (autoDestroy), so exactly one release.
    stream.once('close', () => { void mounted.release().catch(() => undefined); });
    return stream;
  }

  private async changesOptions(id: string): Promise<ChangesOptions> {
    const since = this.contentCheckSince ? await this.contentCheckSince(id) : null;
    return since === null ? {} : { contentCheckSinceSec: since };
  }

  async changes(id: string, parent?: string | null): Promise<Change[]> {
    const mounted = await this.mountPair(id, parent);
    try {
      return await changesBetween(mounted.layerDir, mounted.parentDir, await this.changesOptions(id));
    } finally {
      await mounted.release();
    }
  }

  async diffSize(id: string, parent?: string | null): Promise<number> {
    const mounted = await this.mountPair(id, parent);
    try {
      const changes = await changesBetween(mounted.layerDir, mounted.parentDir, await this.changesOptions(id));
      return await diffSizeOf(mounted.layerDir, changes);
    } finally {
      await mounted.release();
    }
  }

  /**
   * Extracts the changeset into the mounted layer; returns the bytes of file content written.
   * `opts.idMappings` shifts the owners stored (the driver records the map; one that cannot
   * is refused with ERR_NOT_SUPPORTED); `ignoreChownErrors` as applyLayer's.
   */
  async applyDiff(id: string, parent: string | null | undefined, tar: Readable | AsyncIterable<Uint8Array>, opts: ApplyDiffOptions & { userXattr?: boolean } = {}): Promise<number> {
    assertValidId(id);
    normalizeParent(parent); // validated for the caller's sake; the layer already sits on its parent
    if (opts.idMappings && !this.driver.storedIdMap) {
      throw new CairnError('ERR_NOT_SUPPORTED',
        `this driver cannot store layer ${id} shifted by idMappings; apply it without them and show it through get(id, { idMappings }) instead`, { subject: id });
    }
    const dir = await this.driver.get(id);
    try {
      return await applyLayer(dir, tar, {
        whiteouts: this.whiteouts,
        ...(opts.idMappings ? { idMappings: opts.idMappings } : {}),
        ...(opts.ignoreChownErrors ? { ignoreChownErrors: true } : {}),
        ...(opts.userXattr ? { userXattr: true } : {}),
      });
    } finally {
      await this.driver.put(id);
    }
  }

  private async mountPair(id: string, parent: string | null | undefined): Promise<MountedPair> {
    assertValidId(id);
    const parentId = parent === undefined ? await this.driver.parentOf(id) : normalizeParent(parent);
    // A layer stored shifted: both sides are shown through its map, so they compare in one id space.
    const idMap = (await this.driver.storedIdMap?.(id)) ?? null;
    const view = idMap ? { idMappings: idMap } : {};
    const layerDir = await this.driver.get(id, view);
    let parentDir: string | null = null;
    if (parentId !== null) {
      try {
        parentDir = await this.driver.get(parentId, view);
      } catch (err) {
        await this.driver.put(id);
        throw err;
      }
    }
    let released = false;
    return {
      layerDir,
      parentDir,
      idMap,
      release: async () => {
        if (released) return;
        released = true;
        try {
          await this.driver.put(id);
        } finally {
          if (parentId !== null) await this.driver.put(parentId);
        }
      },
    };
  }
}

interface MountedPair {
  layerDir: string;
  parentDir: string | null;
  /** Owners are stored shifted by this map: pack them mapped back. */
  idMap: IdMappings | null;
  release(): Promise<void>;
}

/**
 * The changeset half of a driver whose every changeset is naive (vfs, btrfs, zfs,
 * devicemapper): `diff`, `changes` and `diffSize` go to the driver's {@link NaiveDiff},
 * which validates the ids and reaches unknown layers through `get()`, which refuses them.
 * Drivers with a native diff (overlay2, aufs) use NaiveDiff directly for the other cases.
 */
export abstract class NaiveDiffDriver {
  protected abstract readonly naive: NaiveDiff;

  diff(id: string, parent?: string | null): Promise<Readable> {
    return this.naive.diff(id, parent);
  }

  changes(id: string, parent?: string | null): Promise<Change[]> {
    return this.naive.changes(id, parent);
  }

  diffSize(id: string, parent?: string | null): Promise<number> {
    return this.naive.diffSize(id, parent);
  }
}
