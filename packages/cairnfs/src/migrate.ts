import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TarParser, classifyWhiteout, type TarEntry, type TarHandler } from '@cairnfs/archive';
import {
  CairnError, assertValidId, errnoCode, normalizeParent, writeFileAtomic, type Change, type LayerLister, type LayerRef,
  type StorageDriver,
} from '@cairnfs/core';

export type { LayerLister, LayerRef } from '@cairnfs/core';

export function isLayerLister(driver: object): driver is LayerLister {
  return typeof (driver as Partial<LayerLister>).listLayers === 'function';
}

export interface MigrateProgress {
  id: string;
  parent: string | null;
  /** 1-based position of this layer in the migration order. */
  index: number;
  total: number;
  /** `copied` this run, or `already` (verified by an earlier, interrupted run). */
  outcome: 'copied' | 'already';
  /** Canonical digest of the layer's changeset (see layerDigest), equal on both sides. */
  digest: string;
  /** File-content bytes applied (0 for `already`). */
  bytes: number;
}

export interface MigrateOptions {
  /** The layers to move (ids + parents). Default: the source's `listLayers()`; required for drivers without it. */
  layers?: LayerRef[];
  /** Called after each layer is verified; a throw stops the migration there (resume by calling migrate again). */
  onProgress?: (p: MigrateProgress) => void | Promise<void>;
  /**
   * Most bytes one layer's diff may take as a tar; past it the migration stops with
   * ERR_INVALID_ARCHIVE at that layer (the copy removed, resumable). A container can make
   * a 16 TiB sparse file with truncate(1), and a diff writes it out as zeros. Default
   * {@link DEFAULT_MIGRATE_MAX_LAYER_BYTES}, the image store's import bound.
   */
  maxLayerBytes?: number;
}

/** 64 GiB: the default of {@link MigrateOptions.maxLayerBytes}, as @cairnfs/image's maxUncompressedBytes. */
export const DEFAULT_MIGRATE_MAX_LAYER_BYTES = 64 * 2 ** 30;

function layerTooLarge(id: string, max: number): CairnError {
  return new CairnError('ERR_INVALID_ARCHIVE',
    `the diff of layer ${id} is larger than ${max} bytes (maxLayerBytes; sparse files count at their full size): not migrated. ` +
    'Remove the large files from the layer, or migrate with a larger maxLayerBytes.', { subject: id });
}

export interface MigrateResult {
  /** Every layer, parents first, with its verified digest. */
  layers: Array<LayerRef & { digest: string }>;
  copied: number;
  already: number;
  bytes: number;
  journal: string;
}

/** Name of the journal in the target driver's home. */
export const MIGRATE_JOURNAL = '.cairn-migrate.json';

interface Journal {
  version: 1;
  source: { name: string; home: string };
  /** Layer being copied when the journal was last written: a crash leaves it half applied. */
  inProgress: string | null;
  /** Verified layers: id → digest. */
  verified: Record<string, string>;
}

/**
 * Moves every layer of `from` into `to`, keeping ids, parents and contents: parents
 * first, each as `from.diff(id, parent)` → `to.create(id, parent)` + `to.applyDiff`,
 * then verified by comparing the canonical digest (see layerDigest) of the layer on both
 * sides. The source is only read.
 *
 * Resumable: `${to.home}/.cairn-migrate.json` records the layer in progress and every
 * verified layer, written atomically before and after each copy. A second call skips
 * verified layers, removes and redoes the one that was in progress, and continues.
 * A layer already in the target that this migration did not make is accepted when its
 * digest equals the source's, and refused with ERR_LAYER_EXISTS otherwise.
 */
export async function migrate(from: StorageDriver, to: StorageDriver, opts: MigrateOptions = {}): Promise<MigrateResult> {
  const layers = orderParentsFirst(await layersOf(from, opts.layers));
  const max = opts.maxLayerBytes ?? DEFAULT_MIGRATE_MAX_LAYER_BYTES;
  const journalPath = join(to.home, MIGRATE_JOURNAL);
  const journal = await readJournal(journalPath, from);
  const result: MigrateResult = { layers: [], copied: 0, already: 0, bytes: 0, journal: journalPath };

  for (const [i, layer] of layers.entries()) {
    const { id, parent } = layer;
    let digest = journal.verified[id];
    let bytes = 0;
    let outcome: MigrateProgress['outcome'] = 'already';
    if (digest === undefined || !await to.exists(id)) {
      if (await to.exists(id)) {
        if (journal.inProgress === id) {
          await to.remove(id); // half applied when the last run stopped
        } else {
          const [theirs, ours] = await Promise.all([layerDigest(to, id, parent, max), layerDigest(from, id, parent, max)]);
          if (theirs !== ours) {
            throw new CairnError('ERR_LAYER_EXISTS',
              `layer ${id} is already in the ${to.name} store with different contents; remove it from ${to.home} or migrate into another root`, { subject: id });
          }
        }
      }
      if (!await to.exists(id)) {
        journal.inProgress = id;
        await writeJournal(journalPath, journal);
        ({ digest, bytes } = await copyLayer(from, to, layer, max));
        outcome = 'copied';
      } else {
        digest = await layerDigest(to, id, parent, max);
      }
      journal.inProgress = null;
      journal.verified[id] = digest;
      await writeJournal(journalPath, journal);
    }
    if (outcome === 'copied') result.copied++;
    else result.already++;
    result.bytes += bytes;
    result.layers.push({ ...layer, digest });
    await opts.onProgress?.({ id, parent, index: i + 1, total: layers.length, outcome, digest, bytes });
  }
  return result;
}

/** Copies one layer and verifies it; on a mismatch the copy is removed and ERR_BACKEND_FAILED thrown. */
async function copyLayer(from: StorageDriver, to: StorageDriver, layer: LayerRef, max: number): Promise<{ digest: string; bytes: number }> {
  const { id, parent } = layer;
  if (layer.readWrite) await to.createReadWrite(id, parent);
  else await to.create(id, parent);
  try {
    const hasher = new DigestTransform(id, max);
    const source = await from.diff(id, parent);
    const feed = new PassThrough({ highWaterMark: 1 << 20 });
    const [bytes] = await Promise.all([to.applyDiff(id, parent, feed), pipeline(source, hasher, feed)]);
    const sourceDigest = hasher.digest(await from.changes(id, parent));
    const targetDigest = await layerDigest(to, id, parent, max);
    if (targetDigest !== sourceDigest) {
      throw new CairnError('ERR_BACKEND_FAILED',
        `layer ${id} differs after migration to ${to.name} (source ${sourceDigest}, target ${targetDigest}); the copy was removed and the source is untouched`,
        { subject: id });
    }
    return { digest: sourceDigest, bytes };
  } catch (err) {
    await to.remove(id).catch(() => undefined);
    throw err;
  }
}

async function layersOf(from: StorageDriver, given: LayerRef[] | undefined): Promise<LayerRef[]> {
  if (given) return given;
  if (isLayerLister(from)) return from.listLayers();
  throw new CairnError('ERR_PREREQUISITES',
    `the ${from.name} driver cannot list its layers and parents by itself; pass the layer list (ids and parents, e.g. from the image layer store) as layers`,
    { subject: from.name });
}

/** Orders layers so every parent precedes its children; refuses unknown parents and cycles. */
export function orderParentsFirst(layers: readonly LayerRef[]): LayerRef[] {
  const byId = new Map<string, LayerRef>();
  for (const l of layers) {
    assertValidId(l.id);
    const parent = normalizeParent(l.parent);
    if (byId.has(l.id)) throw new CairnError('ERR_LAYER_EXISTS', `layer ${l.id} is listed twice`, { subject: l.id });
    byId.set(l.id, { ...l, parent });
  }
  const out: LayerRef[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (l: LayerRef): void => {
    const s = state.get(l.id);
    if (s === 'done') return;
    if (s === 'visiting') throw new CairnError('ERR_PREREQUISITES', `layer ${l.id} is its own ancestor; the layer list is corrupt`, { subject: l.id });
    state.set(l.id, 'visiting');
    if (l.parent !== null) {
      const p = byId.get(l.parent);
      if (!p) throw new CairnError('ERR_PARENT_NOT_FOUND', `layer ${l.id}'s parent ${l.parent} is not in the layer list`, { subject: l.parent });
      visit(p);
    }
    state.set(l.id, 'done');
    out.push(l);
  };
  for (const l of [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) visit(l);
  return out;
}

async function readJournal(path: string, from: StorageDriver): Promise<Journal> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { version: 1, source: { name: from.name, home: from.home }, inProgress: null, verified: {} };
    throw err;
  }
  const j = JSON.parse(text) as Journal;
  if (j.version !== 1 || typeof j.verified !== 'object' || j.verified === null) {
    throw new CairnError('ERR_PREREQUISITES', `migration journal ${path} is not one cairn wrote; remove it to start the migration over`, { subject: path });
  }
  if (j.source.name !== from.name || j.source.home !== from.home) {
    throw new CairnError('ERR_PREREQUISITES',
      `${path} records a migration from ${j.source.name} at ${j.source.home}, not from ${from.name} at ${from.home}; finish that one or remove the journal`,
      { subject: path });
  }
  return j;
}

async function writeJournal(path: string, journal: Journal): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(journal));
}

/**
 * A digest of what a layer *means*, so two drivers' diffs of the same layer compare
 * equal although their tars differ in bytes. It covers the paths the driver's
 * `changes()` reports: each added or modified one as its tar entry says it is — type,
 * mode, owner, nanosecond mtime, link target, device numbers, xattrs, sha256 of content
 * — and each deleted one by path, sorted by path. Tar entries that `changes()` does not
 * report are left out: a directory aufs or overlay2 copied up without changing it is in
 * their diff dirs but not in a naive diff. Whiteout entries themselves are left out: overlay2 and aufs
 * write a directory replaced wholesale as one opaque marker where full-copy drivers
 * (vfs, btrfs, …) list each deleted entry, and each driver gives whiteouts its own
 * owner, mode and mtime; `changes()` says the same thing on every driver. aufs
 * bookkeeping names (`.wh..wh.plnk`, …) are ignored.
 */
class CanonicalHandler implements TarHandler {
  readonly records: Array<{ path: string; text: string }> = [];
  private current: { path: string; head: string; hash: Hash | null } | null = null;

  entry(e: TarEntry): void {
    const name = e.name.replace(/^\.\//, '').replace(/\/+$/, '');
    const base = name.slice(name.lastIndexOf('/') + 1);
    const wh = classifyWhiteout(base, e.name);
    if (wh.kind !== 'normal') {
      this.current = null; // deletions are taken from changes(): see above
      return;
    }
    const xattrs = [...e.xattrs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => `${k}=${v.toString('base64')}`);
    const head = [e.type, name, (e.mode & 0o7777).toString(8), e.uid, e.gid, e.type === 'dir' || e.type === 'file' || e.type === 'symlink' || e.type === 'hardlink' || e.type === 'fifo' || e.type === 'char' || e.type === 'block' ? e.mtimeNs : '',
      e.type === 'file' ? e.size : '', e.linkname ?? '', e.type === 'char' || e.type === 'block' ? `${e.devmajor},${e.devminor}` : '', xattrs.join(';')].join('\t');
    this.current = { path: name, head, hash: e.type === 'file' ? createHash('sha256') : null };
  }

  data(chunk: Buffer): void {
    this.current?.hash?.update(chunk);
  }

  end(): void {
    if (!this.current) return;
    const { path, head, hash } = this.current;
    this.records.push({ path, text: hash ? `${head}\t${hash.digest('hex')}` : head });
    this.current = null;
  }

  digest(changes: readonly Change[]): string {
    const changed = new Set<string>();
    const lines: Array<[string, string]> = [];
    for (const c of changes) {
      const path = c.path.replace(/^\/+/, '');
      if (c.kind === 'delete') lines.push([path, `delete\t${path}`]);
      else changed.add(path);
    }
    for (const r of this.records) if (changed.has(r.path)) lines.push([r.path, r.text]);
    lines.sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0));
    return `sha256:${createHash('sha256').update(lines.map(([, t]) => t).join('\n')).digest('hex')}`;
  }
}

/** Passes a tar through unchanged while computing its canonical digest. */
class DigestTransform extends Transform {
  private readonly handler = new CanonicalHandler();
  private readonly parser = new TarParser(this.handler);
  private seen = 0;

  constructor(private readonly id: string, private readonly max: number) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.seen += chunk.length;
      if (this.seen > this.max) throw layerTooLarge(this.id, this.max);
      this.parser.write(chunk);
      cb(null, chunk);
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.parser.finish();
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  digest(changes: readonly Change[]): string {
    return this.handler.digest(changes);
  }
}

/** The canonical digest (see CanonicalHandler) of a layer's changeset against `parent`, as `driver` reports it. */
export async function layerDigest(driver: StorageDriver, id: string, parent: string | null | undefined, maxBytes = DEFAULT_MIGRATE_MAX_LAYER_BYTES): Promise<string> {
  const handler = new CanonicalHandler();
  const parser = new TarParser(handler);
  let seen = 0;
  const diff = await driver.diff(id, parent);
  for await (const chunk of diff as AsyncIterable<Uint8Array>) {
    seen += chunk.length;
    if (seen > maxBytes) { diff.destroy(); throw layerTooLarge(id, maxBytes); }
    parser.write(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  }
  parser.finish();
  return handler.digest(await driver.changes(id, parent));
}
