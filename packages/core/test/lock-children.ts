// The second process of the lock and hold tests: lock-child.ts on a home, driven by lines
// on its stdin, each answered by one line. Every child started is killed after each test.
import { fileURLToPath } from 'node:url';
import { killChild, nextLine, spawnTsChild, type CrashChild } from '@cairnfs/testkit';

const CHILD = fileURLToPath(new URL('./lock-child.ts', import.meta.url));
const children: CrashChild[] = [];

/** Starts lock-child.ts on `home` with the given lock timeout; resolves once it is ready. */
export async function startLockChild(home: string, timeoutMs = 5000): Promise<CrashChild> {
  const c = spawnTsChild(CHILD, [home, String(timeoutMs)]);
  children.push(c);
  expect(await nextLine(c)).toBe('ready');
  return c;
}

/** Sends one command line; resolves with the child's answer (null once it is gone). */
export async function ask(c: CrashChild, line: string): Promise<string | null> {
  c.proc.stdin!.write(`${line}\n`);
  return nextLine(c);
}

/** Kills every child started so far and waits for each to end (for afterEach). */
export async function killLockChildren(): Promise<void> {
  for (const c of children.splice(0)) { killChild(c); await c.exited; }
}
