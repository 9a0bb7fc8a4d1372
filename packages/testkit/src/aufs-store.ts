// A Docker aufs store built by hand (layout as Docker writes it), for the aufs and migration tests.
import { chmod, mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { lutimesNsSync } from '@cairnfs/sys';

export const T = 1_600_000_000_000_000_000n; // a fixed mtime, in ns

/** Writes a file (or makes a dir) and pins its mode and mtime, so trees compare exactly. */
export async function put(path: string, content: string | null, mode = content === null ? 0o755 : 0o644): Promise<void> {
  if (content === null) await mkdir(path, { recursive: true });
  else await writeFile(path, content);
  await chmod(path, mode);
  lutimesNsSync(path, T, T);
}

/** Pins every directory's mtime to T, deepest first (adding a child moved them). */
export async function pinDirTimes(dir: string): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) if (e.isDirectory()) await pinDirTimes(join(dir, e.name));
  lutimesNsSync(dir, T, T);
}

/**
 * A store laid out as Docker's aufs driver writes it: three layers base ← mid ← top,
 * each diff dir with moby's bookkeeping (`.wh..wh.aufs`, `.wh..wh.plnk/`, `.wh..wh.orph/`),
 * deletions as `.wh.` files and a replaced directory as `.wh..wh..opq`.
 */
export async function writeDockerStore(home: string): Promise<void> {
  for (const id of ['base', 'mid', 'top']) {
    await mkdir(join(home, 'mnt', id), { recursive: true });
    const d = join(home, 'diff', id);
    await mkdir(join(d, '.wh..wh.plnk'), { recursive: true });
    await mkdir(join(d, '.wh..wh.orph'), { recursive: true });
    await writeFile(join(d, '.wh..wh.aufs'), '');
  }
  const base = join(home, 'diff', 'base');
  await put(join(base, 'etc'), null);
  await put(join(base, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
  await put(join(base, 'etc/shadow'), 'root:*::0:::::\n', 0o640);
  await put(join(base, 'bin'), null);
  await put(join(base, 'bin/sh'), '#!busybox\n', 0o755);
  await symlink('/bin/sh', join(base, 'bin/ash'));
  lutimesNsSync(join(base, 'bin/ash'), T, T);
  await put(join(base, 'var'), null);
  await put(join(base, 'var/cache'), null);
  await put(join(base, 'var/cache/old'), 'stale');

  const mid = join(home, 'diff', 'mid');
  await put(join(mid, 'etc'), null);
  await put(join(mid, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n');
  await put(join(mid, 'etc/.wh.shadow'), '', 0o444);
  await put(join(mid, 'var'), null);
  await put(join(mid, 'var/cache'), null);
  await put(join(mid, 'var/cache/.wh..wh..opq'), '', 0o444);
  await put(join(mid, 'var/cache/new'), 'fresh');
  await put(join(mid, 'app'), 'binary', 0o755);

  const top = join(home, 'diff', 'top');
  await put(join(top, '.wh.app'), '', 0o444);
  await put(join(top, 'tmp'), null, 0o1777);
  await put(join(top, 'tmp/x'), 'scratch');

  await mkdir(join(home, 'layers'), { recursive: true });
  await writeFile(join(home, 'layers', 'base'), '');
  await writeFile(join(home, 'layers', 'mid'), 'base\n');
  await writeFile(join(home, 'layers', 'top'), 'mid\nbase\n');
  for (const id of ['base', 'mid', 'top']) await pinDirTimes(join(home, 'diff', id));
}

/** The merged tree Docker would show for `top`, built directly. */
export async function writeExpectedTop(dir: string): Promise<void> {
  await put(join(dir, 'etc'), null);
  await put(join(dir, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n');
  await put(join(dir, 'bin'), null);
  await put(join(dir, 'bin/sh'), '#!busybox\n', 0o755);
  await symlink('/bin/sh', join(dir, 'bin/ash'));
  await put(join(dir, 'var'), null);
  await put(join(dir, 'var/cache'), null);
  await put(join(dir, 'var/cache/new'), 'fresh');
  await put(join(dir, 'tmp'), null, 0o1777);
  await put(join(dir, 'tmp/x'), 'scratch');
  lutimesNsSync(join(dir, 'bin/ash'), T, T);
  await pinDirTimes(dir);
}

