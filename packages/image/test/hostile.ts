// Helpers for the hostile-image tests: a host "disk" holding a canary (a loop device whose
// bytes must never reach an export), reading a stream up to its error, and one-image
// docker-save directories.
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { major, minor } from '@cairnfs/sys';
import { writeDockerSave } from '@cairnfs/testkit';

export const CANARY = Buffer.from('HOST-DISK-CANARY-7f3a9c-');

export interface CanaryDisk { dev: string; major: number; minor: number; detach(): void }

/** A loop device over a file filled with {@link CANARY}: host disk bytes an export must never carry. */
export async function canaryDisk(dir: string): Promise<CanaryDisk> {
  const file = join(dir, 'canary.img');
  const body = Buffer.alloc(1 << 20);
  for (let i = 0; i < body.length; i += CANARY.length) CANARY.copy(body, i);
  await writeFile(file, body);
  const dev = execFileSync('losetup', ['-f', '--show', '-r', file], { encoding: 'utf8' }).trim();
  const rdev = statSync(dev).rdev;
  return { dev, major: major(rdev), minor: minor(rdev), detach: () => execFileSync('losetup', ['-d', dev]) };
}

/** Reads a stream to its end or its error; what came before the error is kept. */
export async function drain(r: AsyncIterable<unknown>, timeoutMs = 20_000): Promise<{ bytes: Buffer; error: unknown }> {
  const parts: Buffer[] = [];
  let error: unknown;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`stream still open after ${timeoutMs} ms (blocked?)`)), timeoutMs); });
  try {
    await Promise.race([(async () => { for await (const c of r) parts.push(c as Buffer); })(), timeout]);
  } catch (err) { error = err; } finally { clearTimeout(timer); }
  return { bytes: Buffer.concat(parts), error };
}

/** A docker-save directory with one image; returns its path. */
export async function saveDir(dir: string, layers: Buffer[], tag = 'hostile:1'): Promise<string> {
  await writeDockerSave(dir, layers, tag);
  return dir;
}

/**
 * CPU milliseconds (user + system, all threads of this process) since `since`: unlike wall
 * time it does not grow when other jobs load the machine, so "finishes in well under a
 * second" stays a property of the code, not of the runner.
 */
export function cpuMsSince(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1000;
}
