import { randomBytes } from 'node:crypto';
import { mkdir, readdir, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isProcessAlive, ownerOfToken, ownerToken } from './proc.js';
import { STATE_DIR } from './storelock.js';

/**
 * Who has a home open right now: one empty file per open driver instance,
 * `${home}/.cairn/sessions/<pid>.<start>@<random>`. A record, not a lock (an open driver
 * holds no lock): it lets a driver that owns something shared by every user of the home
 * (devicemapper's loop-lvm pool) tear it down at cleanup only when it is the last one.
 * Files of dead processes are deleted whenever someone counts. Callers decide under the
 * store write lock, so "am I the last?" and "I am here" never race.
 */
export class OpenSessions {
  private readonly dir: string;
  private readonly name = `${ownerToken()}@${randomBytes(4).toString('hex')}`;

  constructor(home: string) {
    this.dir = join(home, STATE_DIR, 'sessions');
  }

  /** Records this driver instance as open. */
  async join(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFile(join(this.dir, this.name), '', { mode: 0o600 });
  }

  /** Removes this instance's record. */
  async leave(): Promise<void> {
    await unlink(join(this.dir, this.name)).catch(() => undefined);
  }

  /** How many other instances (in any live process) have the home open; records of dead processes are deleted. */
  async others(): Promise<number> {
    let n = 0;
    for (const entry of await readdir(this.dir).catch(() => [] as string[])) {
      if (entry === this.name) continue;
      const owner = ownerOfToken(entry.split('@')[0] ?? '');
      if (owner !== null && isProcessAlive(owner)) n++;
      else await unlink(join(this.dir, entry)).catch(() => undefined);
    }
    return n;
  }
}
