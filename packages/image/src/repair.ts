import { readdir, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, isProcessAlive, type StorageDriver } from '@cairnfs/core';
import { intentOwnerAlive, isAbandonedScratch, type Pins } from './claims.js';
import type { StoreLayout } from './layout.js';
import type { StoreState } from './state.js';

/** True when a dead process left something in the store: an intent, a scratch file, a pin. */
export async function hasAbandonedWork(s: StoreState, layout: StoreLayout): Promise<boolean> {
  if (s.pins.some((p) => !isProcessAlive(p.owner))) return true;
  for (const name of await readdir(layout.tmp).catch(() => [] as string[])) {
    const abandoned = name.startsWith('intent-') ? !(await intentOwnerAlive(join(layout.tmp, name))) : isAbandonedScratch(name);
    if (abandoned) return true;
  }
  return false;
}

/**
 * Finishes what dead processes cut short (the caller holds the store write lock): driver
 * layers named by an intent of a dead process that no metadata claims are removed, its
 * scratch files deleted, its pins dropped. Work of live processes is left alone. Returns
 * the cache ids of the driver layers removed.
 */
export async function sweepAbandoned(s: StoreState, layout: StoreLayout, pins: Pins, driver: StorageDriver): Promise<string[]> {
  const claimed = new Set([...s.layers.values()].map((l) => l.cacheId));
  for (const c of s.containers.values()) claimed.add(c.mountId);
  const pending = new Map<string, string>(); // cache id → its intent file
  for (const name of await readdir(layout.tmp).catch(() => [] as string[])) {
    const p = join(layout.tmp, name);
    if (name.startsWith('intent-')) {
      if (await intentOwnerAlive(p)) continue; // an import or removal in progress
      const cacheId = name.slice('intent-'.length);
      if (!claimed.has(cacheId) && await driver.exists(cacheId)) pending.set(cacheId, p);
      else await unlink(p).catch(() => undefined);
    } else if (isAbandonedScratch(name)) {
      await rm(p, { recursive: true, force: true });
    }
  }
  if (await pins.sweep()) s.pins = await pins.load();
  // An import cut short leaves a chain of driver layers, and drivers refuse to remove a
  // parent before its children; which is which is not recorded, so retry the refused
  // ones while a round makes progress (found by the import kill trials: in directory
  // order the store failed to open until someone removed the layers by hand).
  const removed: string[] = [];
  while (pending.size > 0) {
    const before = pending.size;
    let refused: unknown = null;
    for (const [cacheId, intent] of [...pending]) {
      try {
        await driver.remove(cacheId);
      } catch (err) {
        if (!(err instanceof CairnError && err.code === 'ERR_LAYER_IN_USE')) throw err;
        refused = err;
        continue;
      }
      pending.delete(cacheId);
      removed.push(cacheId);
      await unlink(intent).catch(() => undefined);
    }
    if (pending.size === before) throw refused; // nothing went this round: a user outside the store holds them
  }
  return removed;
}
