import { execFile, spawn } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { constants as sysConstants, flockSync } from '@cairnfs/sys';

/**
 * A zfs-fuse daemon and a file-backed pool for tests, as the shared backend notes
 * describe: `/sbin/zfs-fuse --no-daemon --no-kstat-mount --enable-xattr` started as a
 * child (pid recorded: `--pidfile` writes nothing in that mode), ready once `zpool list`
 * answers, a pool on a sparse file.
 *
 * ## One daemon, several users
 * zfs-fuse has one fixed control socket (/var/run/zfs/zfs_socket), so there is one daemon
 * per machine, and jest runs test files in parallel workers. The decision:
 * - a daemon already answering is *reused*, never stopped by us, whoever started it;
 * - otherwise the first fixture starts one and records its pid in {@link STATE_DIR};
 * - every fixture holds a shared flock on a users file for its lifetime; the fixture
 *   that disposes last (it can take the lock exclusively) stops the daemon, by the
 *   recorded pid and only if that pid is still zfs-fuse, and only if the testkit started it.
 * Each fixture gets its own pool (unique name; a stale pool of that name is destroyed
 * first, since zfs-fuse re-imports pools from its cache on restart).
 */
export interface ZfsFuseFixture {
  /** The pool's name. */
  readonly pool: string;
  /** A private temp directory holding the pool image and the mount points of {@link newFilesystem}. */
  readonly dir: string;
  /** True when this fixture started the daemon (false: reused one that was running). */
  readonly startedDaemon: boolean;
  /** Creates `<pool>/<name>` mounted at `<dir>/<name>` and returns both. */
  newFilesystem(name: string): Promise<{ dataset: string; path: string }>;
  /** Runs `zfs` with `args`; resolves stdout, rejects with stderr in the message. */
  zfs(...args: string[]): Promise<string>;
  /** Destroys the pool, deletes the temp dir, and stops the daemon if this was its last user and the testkit started it. */
  dispose(): Promise<void>;
}

const DAEMON = '/sbin/zfs-fuse';
/** Where fixtures of all processes coordinate; under /run so a reboot clears it. */
export const STATE_DIR = '/run/cairn-testkit-zfs-fuse';
const START_LOCK = join(STATE_DIR, 'start.lock');
const USERS_LOCK = join(STATE_DIR, 'users.lock');
const PID_FILE = join(STATE_DIR, 'daemon.pid');

/** Null when zfs-fuse can run here, else what is missing (for describeBackend). */
export function zfsFuseMissing(): string | null {
  if (process.getuid?.() !== 0) return 'zfs-fuse tests need root';
  for (const tool of [DAEMON, '/sbin/zfs', '/sbin/zpool']) {
    if (!existsSync(tool)) return `${tool} is missing: install zfs-fuse (scripts/install-deps.sh)`;
  }
  if (!existsSync('/dev/fuse')) return '/dev/fuse is missing: the kernel has no FUSE';
  return null;
}

function run(tool: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    // Bounded: a wedged daemon must fail the test, not hang the run.
    execFile(tool, args, { env: { ...process.env, LC_ALL: 'C' }, timeout: 60_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${tool} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

async function daemonAnswers(): Promise<boolean> {
  return run('/sbin/zpool', ['list']).then(() => true, () => false);
}

/** Takes a flock, polling so a held lock does not block the event loop. */
async function lockFile(path: string, mode: 'shared' | 'exclusive', timeoutMs = 60_000): Promise<FileHandle> {
  const handle = await open(path, 'a', 0o600);
  const op = (mode === 'shared' ? sysConstants.LOCK_SH : sysConstants.LOCK_EX) | sysConstants.LOCK_NB;
  const deadline = Date.now() + timeoutMs;
  while (!flockSync(handle.fd, op)) {
    if (Date.now() > deadline) {
      await handle.close();
      throw new Error(`timed out waiting for the lock ${path}`);
    }
    await sleep(25);
  }
  return handle;
}

function isZfsFuse(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] === DAEMON;
  } catch {
    return false;
  }
}

async function startDaemon(): Promise<number> {
  const log = openSync(join(STATE_DIR, 'daemon.log'), 'a');
  let child;
  try {
    child = spawn(DAEMON, ['--no-daemon', '--no-kstat-mount', '--enable-xattr'], { stdio: ['ignore', log, log], detached: true });
  } finally {
    closeSync(log);
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${DAEMON}`);
  let exited: number | null = null;
  child.once('exit', (code) => { exited = code ?? -1; });
  child.unref(); // the daemon outlives this worker if another fixture still uses it
  const deadline = Date.now() + 15_000;
  while (!await daemonAnswers()) {
    if (exited !== null) throw new Error(`${DAEMON} exited with ${exited} before answering; see ${join(STATE_DIR, 'daemon.log')}`);
    if (Date.now() > deadline) {
      process.kill(pid, 'SIGTERM');
      throw new Error(`${DAEMON} did not answer zpool list within 15 s`);
    }
    await sleep(50);
  }
  await writeFile(PID_FILE, `${pid}\n`);
  return pid;
}

/** SIGTERM (≈2 s to exit), SIGKILL after 15 s: a deadlocked zfs-fuse ignores SIGTERM. */
async function stopDaemon(pid: number): Promise<void> {
  if (!isZfsFuse(pid)) return;
  process.kill(pid, 'SIGTERM');
  let deadline = Date.now() + 15_000;
  while (isZfsFuse(pid) && Date.now() < deadline) await sleep(50);
  if (!isZfsFuse(pid)) return;
  process.kill(pid, 'SIGKILL');
  deadline = Date.now() + 5_000;
  while (isZfsFuse(pid) && Date.now() < deadline) await sleep(50);
}

let poolCounter = 0;

/** Starts (or reuses) the zfs-fuse daemon and makes a fresh pool on a 2 GiB sparse file. */
export async function startZfsFuse(opts: { sizeBytes?: number } = {}): Promise<ZfsFuseFixture> {
  const missing = zfsFuseMissing();
  if (missing) throw new Error(missing);
  await mkdir(STATE_DIR, { recursive: true, mode: 0o700 });

  const startLock = await lockFile(START_LOCK, 'exclusive');
  let users: FileHandle;
  let startedDaemon = false;
  try {
    if (!await daemonAnswers()) {
      await startDaemon();
      startedDaemon = true;
    }
    users = await lockFile(USERS_LOCK, 'shared');
  } finally {
    await startLock.close();
  }

  const pool = `cairnt${process.pid}x${++poolCounter}`;
  const dir = await mkdtemp(join(tmpdir(), `cairn-zfs-${pool}-`));
  const zfs = (...args: string[]) => run('/sbin/zfs', args);
  const disposeAll = async () => {
    await run('/sbin/zpool', ['destroy', '-f', pool]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    await users.close();
    const lock = await lockFile(START_LOCK, 'exclusive');
    try {
      const last = await open(USERS_LOCK, 'a');
      try {
        if (!flockSync(last.fd, sysConstants.LOCK_EX | sysConstants.LOCK_NB)) return; // others still use the daemon
        const recorded = Number((await readFile(PID_FILE, 'utf8').catch(() => '')).trim());
        if (Number.isInteger(recorded) && recorded > 0) {
          await stopDaemon(recorded);
          await unlink(PID_FILE).catch(() => undefined);
        }
      } finally {
        await last.close();
      }
    } finally {
      await lock.close();
    }
  };
  try {
    if (await run('/sbin/zpool', ['list', '-H', '-o', 'name', pool]).then(() => true, () => false)) {
      await run('/sbin/zpool', ['destroy', '-f', pool]); // stale, from a pid reused after a crash
    }
    const image = join(dir, 'pool.img');
    await writeFile(image, '');
    await truncate(image, opts.sizeBytes ?? 2 * 1024 ** 3);
    await run('/sbin/zpool', ['create', '-f', '-m', 'none', pool, image]);
  } catch (err) {
    await disposeAll().catch(() => undefined);
    throw err;
  }

  let disposed = false;
  return {
    pool,
    dir,
    startedDaemon,
    zfs,
    async newFilesystem(name: string) {
      const dataset = `${pool}/${name}`;
      const path = join(dir, name);
      await zfs('create', '-o', `mountpoint=${path}`, dataset);
      return { dataset, path };
    },
    async dispose() {
      if (disposed) return;
      disposed = true;
      await disposeAll();
    },
  };
}
