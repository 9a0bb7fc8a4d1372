// What every command shares: the global options, opening the driver and the image store,
// and usage errors. Commands get their Command object from commander and read the global
// options through it, so command modules need no shared mutable state.
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { LayerStore } from '@cairnfs/image';
import { CairnError, openDriver, type StorageDriver } from '../index.js';
import { DEFAULT_LOCK_TIMEOUT_MS } from '@cairnfs/core';

export type ProgressMode = 'auto' | 'plain' | 'json' | 'none';

export interface Globals {
  root: string;
  driver?: string;
  storageOpt: string[];
  json?: boolean;
  bytes?: boolean;
  progress: ProgressMode;
  lockTimeout?: string;
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

/** --lock-timeout: how long an operation waits for a lock another process holds (default 30 000 ms). */
export function lockTimeoutMs(cmd: Command): number {
  const raw = globals(cmd).lockTimeout;
  if (raw === undefined) return DEFAULT_LOCK_TIMEOUT_MS;
  const ms = Number(raw);
  if (!Number.isInteger(ms) || ms < 0) throw new CairnError('ERR_INVALID_OPTION', `--lock-timeout ${raw}: expected milliseconds, e.g. 30000 (0: do not wait)`, { subject: raw });
  return ms;
}

/**
 * Opens the driver (auto-selected unless --driver) and its image store, runs fn, releases
 * both. Every lock is per operation, so this works while other processes (a runtime,
 * another cairn) have the root open; cleanup drops this process's mount holds only.
 */
export async function withStore<T>(cmd: Command, fn: (store: LayerStore, driver: StorageDriver) => Promise<T>): Promise<T> {
  const g = globals(cmd);
  const timeout = lockTimeoutMs(cmd);
  const driver = await openDriver({ root: rootOf(cmd), options: driverOptions(cmd), lockTimeoutMs: timeout, ...(g.driver ? { driver: g.driver } : {}) });
  try {
    const store = await LayerStore.open(driver, { lockTimeoutMs: timeout });
    try {
      return await fn(store, driver);
    } finally {
      await store.close();
    }
  } finally {
    await driver.cleanup();
  }
}

/** The hold `cairn mount NAME` records and `cairn umount NAME` drops: the store's, not this short-lived process's. */
export const cliMount = (name: string) => ({ holder: `cli-mount:${name}` });

/** Chain id → the driver's id of that layer (null for no parent). */
export const cacheIdOf = (store: LayerStore, chain: string | null): string | null => (chain ? store.layer(chain).cacheId : null);
