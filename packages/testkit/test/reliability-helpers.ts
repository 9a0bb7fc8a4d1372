import { readFileSync } from 'node:fs';

/** Shared knobs of the reliability tests: longer runs on demand through the environment. */

/** Kill trials per driver: CAIRN_CRASH_TRIALS, else the CI default. */
export function crashTrials(ciDefault: number): number {
  const n = Number(process.env.CAIRN_CRASH_TRIALS);
  return Number.isInteger(n) && n > 0 ? n : ciDefault;
}

/** The run's seed: CAIRN_CRASH_SEED to replay a failure, else a fresh one (printed by the test). */
export function crashSeed(): number {
  const n = Number(process.env.CAIRN_CRASH_SEED);
  return Number.isInteger(n) ? n : Math.floor(Math.random() * 2 ** 31);
}

/** Null when this process can mount overlayfs (root, kernel support), else why not. */
export function overlayMissing(): string | null {
  if (process.getuid?.() !== 0) return 'overlay mounts need root';
  try {
    const known = readFileSync('/proc/filesystems', 'utf8');
    return /\toverlay$/m.test(known) ? null : 'the kernel has no overlay filesystem (modprobe overlay)';
  } catch {
    return 'cannot read /proc/filesystems: not Linux?';
  }
}
