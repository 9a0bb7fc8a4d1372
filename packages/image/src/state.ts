import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readSmall, writeFileAtomic } from './atomic.js';
import type { Pin, Pins } from './claims.js';
import { chainIds } from './digest.js';
import type { StoreLayout } from './layout.js';
import { isStoreKey, normalizeTag, refMeaning } from './reference.js';
import { CairnError } from '@cairnfs/core';
import { hexOf } from './digest.js';
import { localNameCandidates } from './registry/reference.js';
import type { ContainerInfo, ImageInfo, LayerInfo } from './store.js';

/**
 * Everything a layer store knows, as read from its directory: the tables a LayerStore
 * keeps in memory between operations and reads again whenever another process (or
 * another LayerStore) changed them (core's SharedTable, under the store's lock).
 */
export interface StoreState {
  layers: Map<string, LayerInfo>;
  images: Map<string, ImageInfo>;
  containers: Map<string, ContainerInfo>;
  /** tag → image id */
  tags: Map<string, string>;
  /** Imports and commits in progress (see claims.ts). */
  pins: Pin[];
}

/** Reads the whole store: layerdb, imagedb, mounts, repositories.json, pins. Entries that are not whole are skipped. */
export async function loadState(layout: StoreLayout, pins: Pins): Promise<StoreState> {
  const state: StoreState = { layers: new Map(), images: new Map(), containers: new Map(), tags: new Map(), pins: await pins.load() };
  for (const hex of await readdir(layout.layerDb).catch(() => [] as string[])) {
    const d = join(layout.layerDb, hex);
    const diffId = await readSmall(join(d, 'diff'));
    const cacheId = await readSmall(join(d, 'cache-id'));
    if (!diffId || !cacheId) continue; // not a layer: skip rather than refuse to open
    state.layers.set(`sha256:${hex}`, {
      chainId: `sha256:${hex}`, diffId, cacheId, parent: (await readSmall(join(d, 'parent'))) ?? null,
      size: Number(await readSmall(join(d, 'size')) ?? 0), tarSize: Number(await readSmall(join(d, 'tar-size')) ?? 0),
      exact: (await readSmall(join(d, 'exact'))) === 'true',
    });
  }
  for (const hex of await readdir(layout.images).catch(() => [] as string[])) {
    if (!/^[0-9a-f]{64}$/.test(hex)) continue;
    try {
      const cfg = JSON.parse(await readFile(join(layout.images, hex), 'utf8')) as { rootfs?: { diff_ids?: string[] } };
      const diffIds = cfg.rootfs?.diff_ids ?? [];
      state.images.set(`sha256:${hex}`, { id: `sha256:${hex}`, tags: [], diffIds, layers: chainIds(diffIds) });
    } catch { /* a torn config cannot exist (atomic writes); an alien file is ignored */ }
  }
  const repos = await readSmall(layout.repositories);
  if (repos) {
    const parsed = JSON.parse(repos) as { Repositories?: Record<string, Record<string, string>> };
    for (const byTag of Object.values(parsed.Repositories ?? {})) {
      // A tag that could pose as an image id (written before tags were validated) is dropped.
      for (const [tag, id] of Object.entries(byTag)) if (state.images.has(id) && isStoreKey(tag)) state.tags.set(normalizeTag(tag), id);
    }
  }
  for (const img of state.images.values()) img.tags = tagsOf(state, img.id);
  for (const name of await readdir(layout.mounts).catch(() => [] as string[])) {
    const d = layout.mount(name);
    const mountId = await readSmall(join(d, 'mount-id'));
    const image = await readSmall(join(d, 'image'));
    if (!mountId || !image) continue;
    state.containers.set(name, { name, mountId, image, parent: (await readSmall(join(d, 'parent'))) ?? null });
  }
  return state;
}

export function tagsOf(state: StoreState, imageId: string): string[] {
  return [...state.tags].filter(([, id]) => id === imageId).map(([t]) => t).sort();
}

/** Writes repositories.json from the tag table (the caller holds the store write lock) and refreshes every image's tags. */
export async function saveRepositories(state: StoreState, layout: StoreLayout, dir: string): Promise<void> {
  const repos: Record<string, Record<string, string>> = {};
  for (const [tag, id] of [...state.tags].sort()) {
    const name = tag.includes('@') ? tag.slice(0, tag.indexOf('@')) : tag.slice(0, tag.lastIndexOf(':'));
    (repos[name] ??= {})[tag] = id;
  }
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(layout.repositories, JSON.stringify({ Repositories: repos }, null, 2) + '\n');
  for (const img of state.images.values()) img.tags = tagsOf(state, img.id);
}

/** The image a reference names in `state` (see LayerStore.image for the rules). */
export function resolveImage(state: StoreState, ref: string): ImageInfo {
  const { images: imageMap, tags } = state;
  const m = refMeaning(ref);
  const missing = () => new CairnError('ERR_IMAGE_NOT_FOUND', `no image ${ref}; \`cairn images\` lists them, \`cairn import FILE\` adds one`, { subject: ref });
  if (m.fullId) {
    const img = imageMap.get(m.fullId);
    if (img) return img;
    throw missing();
  }
  // `busybox:1.36` also finds what a pull recorded as `docker.io/library/busybox:1.36`, and back.
  let byTag: string | undefined;
  if (m.tag) for (const name of [m.tag, ...localNameCandidates(ref)]) { byTag = tags.get(name); if (byTag) break; }
  const hits = m.idPrefix ? [...imageMap.keys()].filter((id) => hexOf(id).startsWith(m.idPrefix!)) : [];
  if (byTag && hits.length > 0 && !(hits.length === 1 && hits[0] === byTag)) {
    throw new CairnError('ERR_INVALID_OPTION',
      `${ref} is ambiguous: it is a tag of image ${byTag} and a prefix of the id of ${hits.filter((h) => h !== byTag).join(', ')}; ` +
      'give the full image id (sha256:…) or the tag with a registry or repository path', { subject: ref });
  }
  if (byTag) return imageMap.get(byTag)!;
  if (hits.length === 1) return imageMap.get(hits[0]!)!;
  if (hits.length > 1) throw new CairnError('ERR_INVALID_OPTION', `image id prefix ${m.idPrefix} is ambiguous (${hits.length} images); give more digits`, { subject: ref });
  throw missing();
}
