import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { isOwnerAlive, isProcessAlive, ownerOfToken, ownerToken, writeFileAtomic } from '@cairnfs/core';
import type { ProcessIdentity } from '@cairnfs/core';

/**
 * What a process doing work in a layer store shares with every other process on it,
 * so that an open or a gc elsewhere tells its work in progress from a dead process's
 * leftovers (core's owner names: pid + start time):
 *
 * - **Scratch names** in `layerdb/tmp/`: `<kind>@<pid>.<start>@<random>`. A sweep deletes
 *   only those whose process is gone.
 * - **Intents** `layerdb/tmp/intent-<cache id>`, written before a driver layer is made or
 *   removed, holding the cache id and the owner. A sweep removes the driver layer of an
 *   intent whose owner is gone and whose layer no metadata claims.
 * - **Pins** `layerdb/pins/<owner>@<random>`: the chain ids an import or commit in
 *   progress builds on or is making. They count as users of those layers (refcount),
 *   so a `rmi` or `gc` elsewhere never removes a layer under an import. A pin of a dead
 *   process counts for nothing and is deleted when seen.
 */

export function scratchName(kind: string): string {
  return `${kind}@${ownerToken()}@${randomBytes(6).toString('hex')}`;
}

/** Writes an intent for `cacheId`, owned by this process. */
export async function writeIntent(path: string, cacheId: string): Promise<void> {
  await writeFileAtomic(path, `${cacheId}\n${ownerToken()}\n`);
}

/** Whether the process that wrote the intent at `path` still runs (an intent of an older cairn names no owner: gone). */
export async function intentOwnerAlive(path: string): Promise<boolean> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const owner = ownerOfToken(text.split('\n')[1]?.trim() ?? '');
  return owner !== null && isProcessAlive(owner);
}

/** A pin read back: its owner and chains. */
export interface Pin {
  owner: ProcessIdentity;
  chains: string[];
}

export class Pins {
  constructor(private readonly dir: string) {}

  /** Pins `chains` for this process; returns the pin's name (to drop it). The caller holds the store write lock. */
  async add(chains: string[]): Promise<string> {
    await mkdir(this.dir, { recursive: true });
    const name = `${ownerToken()}@${randomBytes(6).toString('hex')}`;
    await writeFileAtomic(join(this.dir, name), JSON.stringify(chains), 0o600, { durable: false });
    return name;
  }

  async drop(name: string): Promise<void> {
    await unlink(join(this.dir, name)).catch(() => undefined);
  }

  /** Every pin on disk (of live and dead processes alike: refcount asks about liveness when it counts). */
  async load(): Promise<Pin[]> {
    const pins: Pin[] = [];
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      const owner = ownerOfToken(name.split('@')[0] ?? '');
      if (owner === null) continue;
      try {
        const chains = JSON.parse(await readFile(join(this.dir, name), 'utf8')) as unknown;
        if (Array.isArray(chains)) pins.push({ owner, chains: chains.filter((c): c is string => typeof c === 'string') });
      } catch {
        // being written, or removed: the next load sees it whole or not at all
      }
    }
    return pins;
  }

  /** Deletes the pins of dead processes (under the store write lock); true if any. */
  async sweep(): Promise<boolean> {
    let any = false;
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      const owner = ownerOfToken(name.split('@')[0] ?? '');
      if (owner !== null && isProcessAlive(owner)) continue;
      await rm(join(this.dir, name), { force: true });
      any = true;
    }
    return any;
  }
}

/** True for pins whose process still runs and that name `chainId`. */
export function pinned(pins: Pin[], chainId: string): number {
  return pins.filter((p) => p.chains.includes(chainId) && isProcessAlive(p.owner)).length;
}

/** True when a `layerdb/tmp` entry is a dead process's leftover (scratch names; intents are judged by their content). */
export function isAbandonedScratch(name: string): boolean {
  return !isOwnerAlive(name);
}
