// What every command shares: the global options, opening the driver and the image store,
// and usage errors. Commands get their Command object from commander and read the global
// options through it, so command modules need no shared mutable state.
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { LayerStore } from '@cairnfs/image';
import { CairnError, openDriver, type StorageDriver } from '../index.js';

export type ProgressMode = 'auto' | 'plain' | 'json' | 'none';

export interface Globals {
  root: string;
  driver?: string;
  storageOpt: string[];
  json?: boolean;
  bytes?: boolean;
  progress: ProgressMode;
}

/** A mistake in how the command was called: exit status 2, like commander's own usage errors. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export function globals(cmd: Command): Globals {
  return cmd.optsWithGlobals<Globals>();
}

/** --storage-opt key=value pairs as the driver options map. */
export function driverOptions(cmd: Command): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of globals(cmd).storageOpt) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new CairnError('ERR_INVALID_OPTION', `--storage-opt ${kv}: expected key=value, e.g. overlay2.size=10G`, { subject: kv });
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

export const rootOf = (cmd: Command): string => resolve(globals(cmd).root);

/** Opens the driver (auto-selected unless --driver) and its image store, runs fn, releases the driver. */
export async function withStore<T>(cmd: Command, fn: (store: LayerStore, driver: StorageDriver) => Promise<T>, keepMounts = false): Promise<T> {
  const g = globals(cmd);
  const driver = await openDriver({ root: rootOf(cmd), options: driverOptions(cmd), ...(g.driver ? { driver: g.driver } : {}) });
  try {
    return await fn(await LayerStore.open(driver), driver);
  } finally {
    // `mount` leaves its mount for `umount` in a later process to find.
    if (!keepMounts) await driver.cleanup();
  }
}

/** Chain id → the driver's id of that layer (null for no parent). */
export const cacheIdOf = (store: LayerStore, chain: string | null): string | null => (chain ? store.layer(chain).cacheId : null);
