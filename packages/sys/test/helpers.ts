// Scratch space for sys tests: a temp dir with its own tmpfs (so overlay never stacks on
// whatever backs /tmp), and a teardown that detaches every mount made under it, even when
// the test failed half way.
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { isNativeError } from 'node:util/types';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mount, umount2, constants, type SplitReplay } from '@cairnfs/sys';

export interface Scratch {
  dir: string;
  cleanup(): Promise<void>;
}

/** Mount points at or below `dir`, deepest first, from /proc/self/mountinfo. */
export function mountsUnder(dir: string): string[] {
  const lines = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  const points = lines
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map((p) => p.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(dir + '/'));
  return points.sort((a, b) => b.length - a.length);
}

export async function scratch(prefix = 'cairn-sys-'): Promise<Scratch> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await mount('tmpfs', dir, 'tmpfs', 0, 'mode=0755');
  return {
    dir,
    async cleanup() {
      for (let i = 0; i < 16; i++) {
        const points = mountsUnder(dir);
        if (points.length === 0) break;
        for (const p of points) await umount2(p, constants.MNT_DETACH).catch(() => undefined);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export function isMountPoint(path: string): boolean {
  return mountsUnder(path).includes(path);
}

/** The error `fn` throws synchronously. Native errors come from the main realm, not jest's
 *  vm context, so `instanceof TypeError` would be false; compare names instead. */
export function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    if (!isNativeError(e)) throw new Error(`threw a non-Error: ${String(e)}`);
    return e;
  }
  throw new Error('did not throw');
}

/** Fills fresh `chunk`-byte buffers from `replay` until it is done, pushing each filled part onto `out` (kept on a throw). */
export async function drainReplay(replay: SplitReplay, out: Buffer[], chunk: number): Promise<void> {
  for (;;) {
    const buf = Buffer.alloc(chunk);
    const n = await replay.fill(buf);
    if (n === 0) return;
    out.push(buf.subarray(0, n));
  }
}
