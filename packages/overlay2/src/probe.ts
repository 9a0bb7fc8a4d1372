import { spawnSync } from 'node:child_process';
import { accessSync, closeSync, constants as fsConstants, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, detectBackingFs, errnoCode, nearestExistingPath, supportsDType } from '@cairnfs/core';
import type { ErrorCode } from '@cairnfs/core';
import * as sys from '@cairnfs/sys';
import { detachMount, mountData } from './mount.js';

/** What the kernel and the backing filesystem offer overlay2, found once at open. */
export interface OverlayFeatures {
  /** moby's name of the filesystem holding the home (`extfs`, `xfs`, …). */
  backingFs: string;
  dType: boolean;
  /** `/sys/module/overlay/parameters/index` exists: mount with `index=off`, as moby does. */
  indexOff: boolean;
  /** Running in a user namespace: mount with `userxattr`. */
  userXattr: boolean;
  /** The upper dir is a faithful changeset (no redirect_dir, opaque not copied up). */
  nativeDiff: boolean;
  /** Why native diff is off, when it is. */
  nativeDiffReason?: string;
  /** The kernel copies up metadata only (`metacopy=Y`): the upper dir is then not a full changeset. */
  metacopy: boolean;
  /** fsopen/fsconfig exist, so `lowerdir+` can stack more layers than one page of data names. */
  newMountApi: boolean;
  /** `overlay2.mount_program`: mounts are made by this FUSE program (fuse-overlayfs), not the kernel's overlay. */
  mountProgram?: string;
}

export type OverlayProbe =
  | { usable: true; features: OverlayFeatures }
  | { usable: false; code: ErrorCode; reason: string; backingFs?: string };

const OVERLAY_PARAMS = '/sys/module/overlay/parameters';

/** Backing filesystems overlayfs cannot use as upper or lower, as moby refuses them. */
const INCOMPATIBLE_FS = new Set(['aufs', 'ecryptfs', 'overlayfs', 'zfs']);

function readParam(name: string): string | undefined {
  try {
    return readFileSync(join(OVERLAY_PARAMS, name), 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** True unless this process's uid map is the initial namespace's identity map. */
export function inUserNamespace(): boolean {
  try {
    const map = readFileSync('/proc/self/uid_map', 'utf8').trim().split(/\s+/);
    return !(map[0] === '0' && map[1] === '0' && map[2] === '4294967295');
  } catch {
    return false;
  }
}

async function overlayInKernel(): Promise<boolean> {
  if (existsSync(OVERLAY_PARAMS)) return true;
  try {
    return /\toverlay$/m.test(await readFile('/proc/filesystems', 'utf8'));
  } catch {
    return false;
  }
}

/**
 * Decides whether overlay2 can run with its home at `home`, and with what features.
 * Creates nothing that outlives the call: the test mounts happen in a temp directory
 * next to (or inside) the home, which is unmounted and deleted before returning.
 */
export async function probeOverlay(home: string, opts: { mountProgram?: string } = {}): Promise<OverlayProbe> {
  if (opts.mountProgram) return probeMountProgram(home, opts.mountProgram);
  if (!(await overlayInKernel())) {
    return { usable: false, code: 'ERR_NOT_SUPPORTED', reason: 'the kernel has no overlay filesystem (not in /proc/filesystems); build or load the overlay module' };
  }
  if (process.getuid?.() !== 0) {
    return { usable: false, code: 'ERR_PREREQUISITES', reason: 'overlay2 needs root (CAP_SYS_ADMIN) to mount overlayfs; run as root' };
  }
  const fs = await detectBackingFs(home);
  if (INCOMPATIBLE_FS.has(fs.name)) {
    return { usable: false, code: 'ERR_INCOMPATIBLE_FS', backingFs: fs.name,
      reason: `backing filesystem is ${fs.name}: overlayfs cannot stack on it; put the storage root on ext4 or xfs` };
  }
  if (!(await supportsDType(home))) {
    const hint = fs.name === 'xfs' ? ' Reformat it with `mkfs.xfs -n ftype=1`.'
      : fs.name === 'extfs' ? ' Reformat it with `mkfs.ext4 -O filetype` (the default).' : '';
    return { usable: false, code: 'ERR_INCOMPATIBLE_FS', backingFs: fs.name,
      reason: `backing filesystem ${fs.name} does not support d_type, without which overlayfs misses whiteouts and deleted files reappear.${hint}` };
  }
  const userXattr = inUserNamespace();
  const indexOff = readParam('index') !== undefined;
  const base = await nearestExistingPath(home);
  let scratch: string;
  try {
    scratch = await mkdtemp(join(base, `${PROBE_PREFIX}${process.pid}-`));
  } catch (err) {
    return { usable: false, code: 'ERR_PREREQUISITES', backingFs: fs.name, reason: `cannot make a test directory in ${base} (${errnoCode(err) ?? String(err)}); make it writable` };
  }
  // The scratch dir is held by a flock for as long as this probe runs, so an open after a
  // crash can tell a dead probe's leftovers (lock free) from a live probe's (lock held).
  const lockFd = openSync(join(scratch, PROBE_LOCK), 'w', 0o600);
  sys.flockSync(lockFd, sys.constants.LOCK_EX);
  try {
    const failure = await tryTwoLowerMount(scratch, indexOff, userXattr);
    if (failure) {
      // Rootless on a kernel (or filesystem) that refuses overlay in a user namespace: say what works instead.
      const hint = userXattr ? '; inside a user namespace the kernel needs Linux 5.11+ and a backing filesystem that allows it: use vfs, or set overlay2.mount_program=/usr/bin/fuse-overlayfs (Debian fuse-overlayfs)' : '';
      return { usable: false, code: failure.code, backingFs: fs.name, reason: failure.reason + hint };
    }
    const native = await checkNativeDiff(join(scratch, 'nd'), indexOff, userXattr);
    const metacopy = readParam('metacopy') === 'Y';
    return {
      usable: true,
      features: {
        backingFs: fs.name,
        dType: true,
        indexOff,
        userXattr,
        nativeDiff: native === null && !metacopy,
        ...(native !== null ? { nativeDiffReason: native } : metacopy ? { nativeDiffReason: 'metacopy=on: upper files may hold metadata only' } : {}),
        metacopy,
        newMountApi: sys.hasNewMountApi(),
      },
    };
  } finally {
    await rm(scratch, { recursive: true, force: true }).catch(() => undefined);
    closeSync(lockFd);
  }
}

const PROBE_PREFIX = '.cairn-overlay-probe-';

/**
 * overlay2 with `overlay2.mount_program` (fuse-overlayfs, as containers/storage uses it
 * rootless): the program must run and mount a two-lower test overlay. Diffs are then naive
 * (the program's upper dir need not be a kernel-style changeset), there is no index, no
 * metacopy and no new mount API.
 */
async function probeMountProgram(home: string, program: string): Promise<OverlayProbe> {
  const fs = await detectBackingFs(home);
  try {
    accessSync(program, fsConstants.X_OK);
  } catch {
    return { usable: false, code: 'ERR_PREREQUISITES', backingFs: fs.name, reason: `overlay2.mount_program ${program} is not an executable file; install fuse-overlayfs (Debian: apt-get install fuse-overlayfs) or fix the path` };
  }
  try {
    accessSync('/dev/fuse', fsConstants.R_OK | fsConstants.W_OK);
  } catch {
    return { usable: false, code: 'ERR_PREREQUISITES', backingFs: fs.name, reason: `overlay2.mount_program ${program} needs /dev/fuse, which this process cannot open (modprobe fuse; chmod 0666 /dev/fuse for unprivileged users)` };
  }
  const base = await nearestExistingPath(home);
  const scratch = await mkdtemp(join(base, `${PROBE_PREFIX}${process.pid}-`));
  try {
    await makeDirs(scratch, ['lower1', 'lower2', 'upper', 'work', 'merged']);
    await writeFile(join(scratch, 'lower1', 'a'), 'one');
    await writeFile(join(scratch, 'lower2', 'b'), 'two');
    const r = spawnSync(program, ['-o', 'lowerdir=lower2:lower1,upperdir=upper,workdir=work', 'merged'], { cwd: scratch, encoding: 'utf8' });
    if (r.status !== 0) {
      return { usable: false, code: 'ERR_NOT_SUPPORTED', backingFs: fs.name, reason: `a test mount with overlay2.mount_program ${program} failed: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}` };
    }
    try {
      const [a, b] = await Promise.all([readFile(join(scratch, 'merged', 'a'), 'utf8'), readFile(join(scratch, 'merged', 'b'), 'utf8')]);
      if (a !== 'one' || b !== 'two') return { usable: false, code: 'ERR_NOT_SUPPORTED', backingFs: fs.name, reason: `a test mount with ${program} did not show both lower layers` };
    } finally {
      await detachMount(join(scratch, 'merged')).catch(() => undefined);
    }
  } finally {
    await rm(scratch, { recursive: true, force: true }).catch(() => undefined);
  }
  return {
    usable: true,
    features: {
      backingFs: fs.name, dType: await supportsDType(home), indexOff: false, userXattr: inUserNamespace(),
      nativeDiff: false, nativeDiffReason: `mounts are made by ${program}: diffs compare the mounted trees`,
      metacopy: false, newMountApi: false, mountProgram: program,
    },
  };
}

function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}
const PROBE_LOCK = '.probe-lock';

/**
 * Removes the scratch dirs (and their test mounts) of probes that died mid-way, e.g. a
 * process killed while opening the driver. A dir whose lock another process still holds
 * belongs to a running probe and is left alone; `mountPoints` is the live mount table.
 */
export async function sweepProbeLeftovers(dir: string, mountPoints: Iterable<string>): Promise<string[]> {
  const swept: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!name.startsWith(PROBE_PREFIX)) continue;
    const scratch = join(dir, name);
    let fd: number | null = null;
    try {
      fd = openSync(join(scratch, PROBE_LOCK), 'r');
      if (!sys.flockSync(fd, sys.constants.LOCK_EX | sys.constants.LOCK_NB)) continue; // a live probe
    } catch {
      // No lock file: a probe between mkdtemp and taking its lock (nothing mounted yet).
      // Its pid is in the name: leave it only while that process lives.
      if (processAlive(Number(name.slice(PROBE_PREFIX.length).split('-')[0]))) continue;
    }
    try {
      for (const point of mountPoints) if (point.startsWith(`${scratch}/`)) await detachMount(point).catch(() => undefined);
      await rm(scratch, { recursive: true, force: true });
      swept.push(scratch);
    } finally {
      if (fd !== null) closeSync(fd);
    }
  }
  return swept;
}

function headOptions(indexOff: boolean, userXattr: boolean): Array<[string, string | null]> {
  const opts: Array<[string, string | null]> = [];
  if (indexOff) opts.push(['index', 'off']);
  if (userXattr) opts.push(['userxattr', null]);
  return opts;
}

async function makeDirs(root: string, names: string[]): Promise<void> {
  for (const n of names) await mkdir(join(root, n), { recursive: true });
}

/** A real mount shaped like a layer on two parents: catches kernels and filesystems that refuse overlay as a lower or upper. */
async function tryTwoLowerMount(dir: string, indexOff: boolean, userXattr: boolean): Promise<{ code: ErrorCode; reason: string } | null> {
  await makeDirs(dir, ['lower1', 'lower2', 'upper', 'work', 'merged']);
  await writeFile(join(dir, 'lower1', 'a'), 'one');
  await writeFile(join(dir, 'lower2', 'b'), 'two');
  // Relative to the scratch dir, so a home path of any length fits in the mount data.
  const data = mountData([...headOptions(indexOff, userXattr), ['lowerdir', 'lower2:lower1'], ['upperdir', 'upper'], ['workdir', 'work']]);
  const merged = join(dir, 'merged');
  try {
    await sys.mountAt(dir, 'overlay', 'merged', 'overlay', 0, data);
  } catch (err) {
    const code = errnoCode(err);
    return { code: code === 'EPERM' ? 'ERR_PREREQUISITES' : 'ERR_NOT_SUPPORTED',
      reason: `a test overlay mount with two lower layers on ${dir} failed (${code ?? String(err)}: ${(err as Error).message}); overlay2 cannot run here` };
  }
  try {
    const [a, b] = await Promise.all([readFile(join(merged, 'a'), 'utf8'), readFile(join(merged, 'b'), 'utf8')]);
    if (a !== 'one' || b !== 'two') return { code: 'ERR_NOT_SUPPORTED', reason: 'a test overlay mount did not show both lower layers' };
    await writeFile(join(merged, 'c'), 'three');
    if (!existsSync(join(dir, 'upper', 'c'))) return { code: 'ERR_NOT_SUPPORTED', reason: 'a write into a test overlay mount did not reach its upper dir' };
    return null;
  } finally {
    await detachMount(merged);
  }
}

/**
 * The same check moby's doesSupportNativeDiff makes, in our own words: if the kernel
 * copies an opaque marker up, or records a directory rename as a redirect xattr instead
 * of copying the tree, the upper dir is not a changeset and diffs must be naive.
 * Returns null when native diff is safe, else the reason.
 */
async function checkNativeDiff(dir: string, indexOff: boolean, userXattr: boolean): Promise<string | null> {
  await makeDirs(dir, ['l1/d', 'l1/d1', 'l2/d', 'l3', 'work', 'merged']);
  await writeFile(join(dir, 'l1', 'd1', 'f'), '');
  const xattrPrefix = userXattr ? 'user.overlay.' : 'trusted.overlay.';
  await sys.lsetxattr(join(dir, 'l2', 'd'), `${xattrPrefix}opaque`, Buffer.from('y'));
  const merged = join(dir, 'merged');
  const data = mountData([...headOptions(indexOff, userXattr), ['lowerdir', 'l2:l1'], ['upperdir', 'l3'], ['workdir', 'work']]);
  await sys.mountAt(dir, 'overlay', 'merged', 'overlay', 0, data);
  try {
    await writeFile(join(merged, 'd', 'f'), '');
    const opaque = await sys.lgetxattr(join(dir, 'l3', 'd'), `${xattrPrefix}opaque`);
    if (opaque?.toString() === 'y') return 'the kernel copies the opaque flag up (fixed in Linux 4.8)';
    try {
      await rename(join(merged, 'd1'), join(merged, 'd2'));
    } catch (err) {
      // EXDEV: redirect_dir is off, so the rename is refused and userspace copies instead.
      if (errnoCode(err) === 'EXDEV') return null;
      throw new CairnError('ERR_NOT_SUPPORTED', `renaming a directory in a test overlay mount failed: ${(err as Error).message}`, { cause: err });
    }
    const redirect = await sys.lgetxattr(join(dir, 'l3', 'd2'), `${xattrPrefix}redirect`);
    if (redirect !== null) return 'the kernel uses redirect_dir (directory renames are recorded as redirects)';
    return null;
  } finally {
    await detachMount(merged);
  }
}
