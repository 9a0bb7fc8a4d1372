import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { constants as sysConstants, flockSync } from '@cairnfs/sys';
import { CairnError, errnoCode } from './errors.js';
import { secureDir } from './securedir.js';

/** The lock file in every driver home. Layer ids cannot start with '.', so it never clashes with a layer. */
export const HOME_LOCK_FILE = '.cairn-lock';

/** How often a waiting {@link acquireHomeLock} retries. */
const POLL_MS = 25;

export interface HomeLockOptions {
  /** Milliseconds to keep retrying while another holder has the lock; 0 (the default) fails at once. */
  timeoutMs?: number;
  /** Mode of the home ({@link secureDir}); default 0700. */
  mode?: number;
}

/** An exclusive hold on a driver home. Keep it for the driver's whole life; `release()` in `cleanup()`. */
export interface HomeLock {
  /** The driver home this lock guards. */
  readonly home: string;
  /** Absolute path of the lock file. */
  readonly path: string;
  /** True until {@link HomeLock.release} is called. */
  readonly held: boolean;
  /** Releases the lock (closes the lock file). Safe to call twice. */
  release(): Promise<void>;
}

class FlockHomeLock implements HomeLock {
  private handle: FileHandle | null;

  constructor(readonly home: string, readonly path: string, handle: FileHandle) {
    this.handle = handle;
  }

  get held(): boolean {
    return this.handle !== null;
  }

  async release(): Promise<void> {
    const handle = this.handle;
    if (!handle) return;
    this.handle = null;
    // Closing the last descriptor of the open file description drops the flock.
    await handle.close();
  }
}

/**
 * Takes the exclusive lock on a driver home (creating the home if needed, refusing one owned
 * by another user, tightening its mode: {@link secureDir}), so that two
 * processes never run a driver on one home at once: their mount counts, staging sweeps
 * and removals would fight.
 *
 * The lock is flock(2) LOCK_EX on `${home}/.cairn-lock`. flock belongs to the open file
 * description, so the kernel drops it when the holder dies, however it dies (no stale
 * pid files to reason about), and a second `acquireHomeLock` in the same process also
 * gets ERR_LOCKED: one home, one driver instance. The lock file is never unlinked:
 * unlinking would let a later opener lock a fresh inode while an older holder still
 * holds the old one.
 */
export async function acquireHomeLock(home: string, opts: HomeLockOptions = {}): Promise<HomeLock> {
  const timeoutMs = Math.max(0, opts.timeoutMs ?? 0);
  const path = join(home, HOME_LOCK_FILE);
  // Every driver opens through here: the one place that refuses a home another user owns
  // and tightens a loose one.
  await secureDir(home, opts.mode ?? 0o700, 'driver home');
  // Node opens with O_CLOEXEC, so child processes we spawn (mkfs, zfs…) never inherit the lock.
  const handle = await open(path, 'a', 0o600);
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      let got: boolean;
      try {
        got = flockSync(handle.fd, sysConstants.LOCK_EX | sysConstants.LOCK_NB);
      } catch (err) {
        throw new CairnError('ERR_PREREQUISITES',
          `cannot lock driver home ${home}: flock on ${path} failed (${errnoCode(err) ?? String(err)}); the filesystem may not support locks`,
          { subject: home, cause: err });
      }
      if (got) return new FlockHomeLock(home, path, handle);
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new CairnError('ERR_LOCKED',
          `driver home ${home} is locked: another cairn driver instance (in this or another process) holds it` +
          `${timeoutMs > 0 ? ` and did not release it within ${timeoutMs} ms` : ''}. ` +
          'Close the other one (cleanup()) or pass lockTimeoutMs to wait for it.',
          { subject: home });
      }
      await sleep(Math.min(POLL_MS, remaining));
    }
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/**
 * Opens a driver under its home lock: `build` runs holding the lock and the driver it
 * returns keeps it (releasing it in `cleanup()`). When `build` fails the lock is released
 * here, so a failed open never leaves the home locked against the next attempt.
 */
export async function openUnderHomeLock<T>(
  home: string,
  opts: HomeLockOptions,
  build: (lock: HomeLock) => Promise<T>,
): Promise<T> {
  const lock = await acquireHomeLock(home, opts);
  try {
    return await build(lock);
  } catch (err) {
    await lock.release();
    throw err;
  }
}
