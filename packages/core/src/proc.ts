import { readFileSync } from 'node:fs';

/**
 * Who a process is, across time: its pid plus its start time (field 22 of
 * `/proc/<pid>/stat`, clock ticks since boot). A pid alone is not an identity: once a
 * process dies the kernel hands its pid to the next process, so "pid 4711 holds a mount"
 * must be checked against the start time, or a dead holder's pid reused by some shell
 * would keep its holds alive forever. Records that outlive a boot also carry the boot id.
 */
export interface ProcessIdentity {
  pid: number;
  /** Start time in clock ticks since boot (`/proc/<pid>/stat` field 22). */
  start: number;
}

/**
 * The start time of `pid`, or null when no such process exists (or it is a zombie, which
 * holds nothing any more). Parsed after the last ')' because field 2, the command name,
 * may itself hold spaces and parentheses.
 */
export function processStartTime(pid: number): number | null {
  if (!Number.isSafeInteger(pid) || pid <= 0) return null;
  let stat: string;
  try {
    // A few hundred bytes from procfs: synchronous on purpose (no I/O wait, no pool hop).
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  const close = stat.lastIndexOf(')');
  if (close < 0) return null;
  // After ") " come field 3 (state), 4, … so field 22 is index 19 of the rest.
  const rest = stat.slice(close + 2).split(' ');
  if (rest[0] === 'Z' || rest[0] === 'X') return null;
  const start = Number(rest[19]);
  return Number.isSafeInteger(start) ? start : null;
}

let self: ProcessIdentity | null = null;

/** This process's identity (computed once). */
export function selfIdentity(): ProcessIdentity {
  if (self === null || self.pid !== process.pid) {
    const start = processStartTime(process.pid);
    if (start === null) throw new Error(`cannot read /proc/${process.pid}/stat: cairn needs procfs to tell live processes from dead ones`);
    self = { pid: process.pid, start };
  }
  return self;
}

/** True when the process `who` names is still running (same pid *and* same start time). */
export function isProcessAlive(who: ProcessIdentity): boolean {
  if (who.pid === process.pid) return who.start === selfIdentity().start;
  return processStartTime(who.pid) === who.start;
}

let boot: string | null = null;

/** The kernel's boot id (a UUID per boot): records from an earlier boot describe nothing alive. */
export function bootId(): string {
  if (boot === null) {
    try {
      boot = readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();
    } catch {
      boot = 'unknown';
    }
  }
  return boot;
}

/**
 * A short token naming this process for file names (`<pid>.<start>`), e.g. in staging
 * directory names, so that a sweep can tell a live process's work in progress from the
 * leftovers of a dead one. See {@link ownerOfToken}.
 */
export function ownerToken(who: ProcessIdentity = selfIdentity()): string {
  return `${who.pid}.${who.start}`;
}

/** The identity an {@link ownerToken} names, or null when `token` is not one. */
export function ownerOfToken(token: string): ProcessIdentity | null {
  const m = /^(\d{1,10})\.(\d{1,20})$/.exec(token);
  if (!m) return null;
  const pid = Number(m[1]);
  const start = Number(m[2]);
  return Number.isSafeInteger(pid) && Number.isSafeInteger(start) ? { pid, start } : null;
}
