import { execFile } from 'node:child_process';
import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export type LoopFsKind = 'btrfs' | 'xfs' | 'ext4' | 'tmpfs';

export interface LoopFsOptions {
  /** Size of the sparse image (or the tmpfs size limit). Defaults: xfs 320, others 128. */
  sizeMiB?: number;
  /** Extra mkfs arguments, e.g. `['-n', 'ftype=1']` for xfs or `['-O', '^filetype']` for ext4. */
  mkfsArgs?: string[];
  /** Extra mount options, comma-separated, e.g. `'prjquota'`. */
  mountOptions?: string;
}

export interface LoopFs {
  /** The mounted filesystem's root directory. */
  dir: string;
  /** Unmounts (lazily, if something still uses it) and deletes the image. Safe to call twice. */
  dispose(): Promise<void>;
}

/** Which apt package installs each tool the tests may need (Debian bookworm names). */
const TOOL_PACKAGES: Record<string, string> = {
  'mkfs.btrfs': 'btrfs-progs',
  btrfs: 'btrfs-progs',
  'mkfs.xfs': 'xfsprogs',
  xfs_quota: 'xfsprogs',
  'mkfs.ext4': 'e2fsprogs',
  getfattr: 'attr',
  zsh: 'zsh',
  fish: 'fish',
  setfattr: 'attr',
  mount: 'mount',
  umount: 'mount',
  losetup: 'mount',
  zfs: 'zfs-fuse',
  zpool: 'zfs-fuse',
  'zfs-fuse': 'zfs-fuse',
  dmsetup: 'dmsetup',
  'qemu-system-x86_64': 'qemu-system-x86',
};

const MKFS: Record<Exclude<LoopFsKind, 'tmpfs'>, { tool: string; quiet: string[]; minMiB: number }> = {
  btrfs: { tool: 'mkfs.btrfs', quiet: ['-q'], minMiB: 114 },
  // xfs refuses filesystems below 300 MiB.
  xfs: { tool: 'mkfs.xfs', quiet: ['-q'], minMiB: 300 },
  ext4: { tool: 'mkfs.ext4', quiet: ['-q', '-F'], minMiB: 1 },
};

function searchPath(): string[] {
  // sbin is often missing from PATH for non-login shells, and that is where mkfs lives.
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  for (const d of ['/usr/local/sbin', '/usr/sbin', '/sbin']) if (!dirs.includes(d)) dirs.push(d);
  return dirs;
}

/** Absolute path of an executable, or null. */
export function findTool(name: string): string | null {
  for (const dir of searchPath()) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return null;
}

/**
 * Null when every named tool is installed, else a reason for {@link describeBackend}
 * such as "mkfs.btrfs not found: run scripts/install-deps.sh (apt package btrfs-progs)".
 */
export function missingTools(...names: string[]): string | null {
  const missing = names.filter((n) => findTool(n) === null);
  if (missing.length === 0) return null;
  const packages = [...new Set(missing.map((n) => TOOL_PACKAGES[n]).filter((p): p is string => p !== undefined))];
  const hint = packages.length ? ` (apt package${packages.length > 1 ? 's' : ''} ${packages.join(', ')})` : '';
  return `${missing.join(', ')} not found: run scripts/install-deps.sh${hint}`;
}

/** Null when {@link makeLoopFs} can make this kind here (root, kernel support, tools), else why not. */
export function loopFsMissing(kind: LoopFsKind): string | null {
  if (process.getuid?.() !== 0) return `mounting a ${kind} test filesystem needs root`;
  const kernelName = kind;
  let known: string;
  try {
    known = readFileSync('/proc/filesystems', 'utf8');
  } catch {
    return 'cannot read /proc/filesystems: not Linux?';
  }
  if (!known.split('\n').some((line) => line.split('\t')[1] === kernelName)) {
    return `the kernel has no ${kernelName} support (not in /proc/filesystems)`;
  }
  if (kind === 'tmpfs') return missingTools('mount', 'umount');
  return missingTools(MKFS[kind].tool, 'mount', 'umount');
}

async function unmount(dir: string): Promise<void> {
  try {
    await run('umount', [dir], { env: toolEnv() });
  } catch (err) {
    const stderr = String((err as { stderr?: unknown }).stderr ?? '');
    if (/not mounted/.test(stderr)) return;
    // Busy (a test left a file open or a mount inside): detach now, the kernel finishes when the last user goes.
    await run('umount', ['-l', dir], { env: toolEnv() });
  }
}

function toolEnv(): NodeJS.ProcessEnv {
  return { ...process.env, PATH: searchPath().join(delimiter) };
}

/**
 * Makes a fresh filesystem of `kind` mounted on a temp directory: a sparse image file
 * formatted and mounted with `-o loop` (the loop device is freed on unmount), or a
 * tmpfs. Always pair with `dispose()` in a finally/afterAll.
 */
export async function makeLoopFs(kind: LoopFsKind, opts: LoopFsOptions = {}): Promise<LoopFs> {
  const base = await mkdtemp(join(tmpdir(), `cairn-${kind}-`));
  const dir = join(base, 'mnt');
  await mkdir(dir);
  let mounted = false;
  let disposed = false;
  const dispose = async (): Promise<void> => {
    if (disposed) return;
    disposed = true;
    if (mounted) await unmount(dir);
    await rm(base, { recursive: true, force: true });
  };
  try {
    const env = toolEnv();
    const extra = opts.mountOptions ? [opts.mountOptions] : [];
    if (kind === 'tmpfs') {
      const size = opts.sizeMiB ?? 128;
      await run('mount', ['-t', 'tmpfs', '-o', [`size=${size}m`, ...extra].join(','), 'tmpfs', dir], { env });
      mounted = true;
      return { dir, dispose };
    }
    const mkfs = MKFS[kind];
    const sizeMiB = Math.max(opts.sizeMiB ?? (kind === 'xfs' ? 320 : 128), mkfs.minMiB);
    const image = join(base, `${kind}.img`);
    const handle = await open(image, 'w');
    try {
      await handle.truncate(sizeMiB * 1024 * 1024); // sparse: costs no disk until written
    } finally {
      await handle.close();
    }
    await run(mkfs.tool, [...mkfs.quiet, ...(opts.mkfsArgs ?? []), image], { env });
    await run('mount', ['-t', kind, '-o', ['loop', ...extra].join(','), image, dir], { env });
    mounted = true;
    return { dir, dispose };
  } catch (err) {
    await dispose().catch(() => undefined);
    const stderr = String((err as { stderr?: unknown }).stderr ?? '').trim();
    throw new Error(`makeLoopFs(${kind}) failed: ${(err as Error).message}${stderr ? `\n${stderr}` : ''}`, { cause: err });
  }
}
