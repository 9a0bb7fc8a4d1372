import { execFile } from 'node:child_process';
import { lstat, mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { DriverContext, StorageDriver } from '@cairnfs/core';
import { btrfsDriver } from '@cairnfs/btrfs';
import type { DriverHarness } from '@cairnfs/testkit';
import { destroySubvolumeTree } from '../src/subvolume.js';

export const run = promisify(execFile);

export function context(root: string, options: Record<string, string> = {}): DriverContext {
  return { root, home: join(root, 'btrfs'), options, lockTimeoutMs: 0 };
}

/**
 * Destroys every subvolume under `dir` (nested ones too) and then the directory: plain
 * rm cannot delete read-only subvolumes, and a test that fails midway leaves them.
 */
export async function destroyTree(dir: string): Promise<void> {
  const sub = join(dir, 'btrfs', 'subvolumes');
  for (const name of await readdir(sub).catch(() => [] as string[])) {
    const st = await lstat(join(sub, name));
    if (st.isDirectory() && st.ino === 256) await destroySubvolumeTree(sub, name).catch(() => undefined);
  }
  await rm(dir, { recursive: true, force: true });
}

/** A btrfs driver on a fresh root inside `base` (a btrfs mount), with reopen and dispose. */
export async function harness(base: string, options: Record<string, string> = {}): Promise<DriverHarness> {
  const root = await mkdtemp(join(base, 'root-'));
  const opened: StorageDriver[] = [await btrfsDriver.open(context(root, options))];
  return {
    driver: opened[0]!,
    reopen: async () => {
      const d = await btrfsDriver.open(context(root, options));
      opened.push(d);
      return d;
    },
    dispose: async () => {
      for (const d of opened) await d.cleanup().catch(() => undefined);
      await destroyTree(root);
    },
  };
}

/** Paths (relative to the filesystem root) of every subvolume on the btrfs filesystem at `mnt`, as btrfs-progs lists them. */
export async function listSubvolumes(mnt: string): Promise<string[]> {
  const { stdout } = await run('btrfs', ['subvolume', 'list', mnt]);
  return stdout.split('\n').filter(Boolean).map((line) => line.replace(/^.* path /, ''));
}
