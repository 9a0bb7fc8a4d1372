import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { constants as sysConstants, flockSync, major, minor } from '@cairnfs/sys';
import { CairnError, errnoCode } from './errors.js';

/**
 * The flock(2) primitives under {@link StoreLocks}: a non-blocking try, a wait that polls
 * with backoff (so the event loop never blocks and the wait can end at a deadline: a
 * blocking flock on the libuv pool could neither be cancelled nor keep the pool free for
 * the holder's own file work), and the kernel's view of who holds a lock (`/proc/locks`)
 * for the ERR_LOCKED message.
 */

/** First and largest pause between two tries of a contended lock, in ms. */
const FIRST_PAUSE_MS = 1;
const MAX_PAUSE_MS = 8;

/** One try: true when the lock was granted. ERR_PREREQUISITES when the filesystem has no locks. */
export function tryFlock(fd: number, exclusive: boolean, path: string): boolean {
  try {
    return flockSync(fd, (exclusive ? sysConstants.LOCK_EX : sysConstants.LOCK_SH) | sysConstants.LOCK_NB);
  } catch (err) {
    throw new CairnError('ERR_PREREQUISITES',
      `cannot lock ${path}: flock failed (${errnoCode(err) ?? String(err)}); the filesystem may not support locks`,
      { subject: path, cause: err });
  }
}

/** Drops a lock taken on `fd` (closing the fd drops it too). */
export function unflock(fd: number): void {
  try {
    flockSync(fd, sysConstants.LOCK_UN);
  } catch {
    // EBADF after a close: nothing is held any more.
  }
}

/**
 * Tries until granted or `deadline` (epoch ms) passes; false on timeout. Pauses grow
 * from 1 ms to 8 ms with jitter, so two waiters do not retry in lockstep and a short
 * hold is noticed within a few ms.
 */
export async function flockUntil(fd: number, exclusive: boolean, deadline: number, path: string): Promise<boolean> {
  let pause = FIRST_PAUSE_MS;
  for (;;) {
    if (tryFlock(fd, exclusive, path)) return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await sleep(Math.min(left, pause * (0.5 + Math.random())));
    pause = Math.min(MAX_PAUSE_MS, pause * 2);
  }
}

/** A holder of a flock lock, as the kernel lists it. */
export interface FlockHolder {
  pid: number;
  exclusive: boolean;
}

/**
 * The processes that hold flock locks on the file with device `dev` and inode `ino`,
 * from `/proc/locks` (`1: FLOCK  ADVISORY  WRITE 4711 fe:00:2146892 0 EOF`; the device
 * is major:minor in hex). Empty when procfs cannot tell.
 */
export async function flockHolders(dev: number, ino: number): Promise<FlockHolder[]> {
  let text: string;
  try {
    text = await readFile('/proc/locks', 'latin1');
  } catch {
    return [];
  }
  const want = `${major(dev).toString(16).padStart(2, '0')}:${minor(dev).toString(16).padStart(2, '0')}:${ino}`;
  const out: FlockHolder[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    // Blocked waiters are listed as "1: -> FLOCK …": skip them, they hold nothing.
    if (f[1] !== 'FLOCK' || f[5] !== want) continue;
    const pid = Number(f[4]);
    if (Number.isSafeInteger(pid)) out.push({ pid, exclusive: f[3] === 'WRITE' });
  }
  return out;
}
