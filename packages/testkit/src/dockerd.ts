import { execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { readMountInfo } from '@cairnfs/core';
import * as sys from '@cairnfs/sys';

/**
 * A private moby dockerd for tests (Debian's docker.io 20.10, overlay2), as the shared
 * backend notes describe: its own data root, exec root, pid file and unix socket, all
 * under one temp dir, no iptables and no bridge, so it touches nothing of the host's.
 * It starts its own containerd child (socket under the exec root).
 *
 * Talk to it with Debian's client (`/usr/bin/docker`): a newer client may be first on
 * PATH, and the 20.10 daemon speaks API 1.41 at most.
 */
export interface DockerdFixture {
  /** The temp dir holding everything below; removed by {@link stop}. */
  readonly dir: string;
  /** `--data-root`: `overlay2/`, `image/overlay2/layerdb/`, `containers/` … */
  readonly dataRoot: string;
  /** `--exec-root`: runtime state and containerd's socket. */
  readonly execRoot: string;
  /** `unix://…` address of the daemon's API socket. */
  readonly host: string;
  /** The dockerd process id. */
  readonly pid: number;
  /** Where dockerd's stdout/stderr go: read it when something fails. */
  readonly logFile: string;
  /**
   * Runs Debian's `docker` client against this daemon; resolves stdout, rejects with
   * stderr in the message. `input` is written to its stdin.
   */
  docker(args: string[], opts?: { input?: string | Buffer; cwd?: string; env?: Record<string, string> }): Promise<string>;
  /**
   * Stops the daemon (SIGTERM, then SIGKILL after a grace period), its containerd child
   * and any shim left, each by pid; unmounts whatever is still mounted under {@link dir};
   * deletes {@link dir} unless `keepDir`. Safe to call twice.
   */
  stop(opts?: { keepDir?: boolean }): Promise<void>;
}

export const DOCKERD = '/usr/sbin/dockerd';
/** Debian's 20.10 client, not whatever `docker` is first on PATH. */
export const DOCKER_CLIENT = '/usr/bin/docker';
const CONTAINERD = '/usr/bin/containerd';

/** Null when a private dockerd can run here, else what is missing (for describeBackend). */
export function dockerdMissing(): string | null {
  if (process.getuid?.() !== 0) return 'dockerd tests need root';
  for (const tool of [DOCKERD, DOCKER_CLIENT, CONTAINERD]) {
    if (!existsSync(tool)) return `${tool} is missing: install docker.io (scripts/install-deps.sh)`;
  }
  if (!existsSync('/sys/module/overlay')) return 'the kernel has no overlayfs, which dockerd\'s overlay2 driver needs';
  return null;
}

/** The environment for the client and the daemon: no DOCKER_* from the caller leaks in. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DOCKER_')) env[k] = v;
  return { ...env, LC_ALL: 'C', ...extra };
}

function childrenOf(pid: number): number[] {
  try {
    const out: number[] = [];
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    }
    return out;
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    // A zombie still answers kill(0); it is dead for our purposes.
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (alive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

/** Every descendant of `pid` (containerd, its shims), found before the parent goes away. */
function descendantsOf(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const c of childrenOf(queue.shift()!)) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/**
 * Starts a private dockerd with the overlay2 driver and waits until `docker version`
 * answers (containerd included). `baseDir` is where its temp dir goes (default: the OS
 * temp dir; keep it short, unix socket paths are limited to 107 bytes). `dataRoot` runs
 * the daemon on an existing data root (e.g. a copy another daemon wrote) instead of a new
 * one in the temp dir; it is left in place by {@link DockerdFixture.stop}.
 */
export async function startDockerd(opts: { baseDir?: string; dataRoot?: string; startTimeoutMs?: number } = {}): Promise<DockerdFixture> {
  const missing = dockerdMissing();
  if (missing) throw new Error(missing);
  const dir = await mkdtemp(join(opts.baseDir ?? tmpdir(), 'cairn-dockerd-'));
  const dataRoot = opts.dataRoot ?? join(dir, 'data');
  const execRoot = join(dir, 'exec');
  const socket = join(dir, 'docker.sock');
  const host = `unix://${socket}`;
  const logFile = join(dir, 'dockerd.log');
  const configFile = join(dir, 'daemon.json');
  const clientConfig = join(dir, 'client');
  if (!opts.dataRoot) await mkdir(dataRoot, { mode: 0o710 });
  await mkdir(execRoot, { mode: 0o700 });
  await mkdir(clientConfig, { mode: 0o700 });
  // An empty config so /etc/docker/daemon.json on the host cannot change the daemon.
  await writeFile(configFile, '{}\n');

  const log = openSync(logFile, 'a');
  let child;
  try {
    child = spawn(DOCKERD, [
      '--config-file', configFile,
      '--data-root', dataRoot,
      '--exec-root', execRoot,
      '--pidfile', join(dir, 'dockerd.pid'),
      '--host', host,
      '--storage-driver', 'overlay2',
      '--iptables=false', '--ip6tables=false', '--bridge=none',
      '--userland-proxy=false',
    ], { stdio: ['ignore', log, log], env: cleanEnv({}) });
  } finally {
    closeSync(log);
  }
  if (child.pid === undefined) throw new Error(`could not start ${DOCKERD}`);
  const pid = child.pid;
  let exited: string | null = null;
  child.once('exit', (code, signal) => { exited = signal ?? String(code); });

  const docker: DockerdFixture['docker'] = (args, o = {}) => new Promise((resolve, reject) => {
    const p = execFile(DOCKER_CLIENT, ['--host', host, ...args], {
      env: cleanEnv({ DOCKER_CONFIG: clientConfig, DOCKER_BUILDKIT: '0', ...(o.env ?? {}) }),
      cwd: o.cwd,
      maxBuffer: 256 * 1024 * 1024,
      encoding: 'utf8',
    }, (err, stdout, stderr) => {
      if (err) reject(new Error(`docker ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
    if (o.input !== undefined) p.stdin!.end(o.input);
    else p.stdin!.end();
  });

  let stopped = false;
  const stop: DockerdFixture['stop'] = async (o = {}) => {
    if (stopped) return;
    stopped = true;
    // Found first: once dockerd is gone its children are reparented and no longer findable.
    const family = descendantsOf(pid);
    if (alive(pid)) {
      try { process.kill(pid, 'SIGTERM'); } catch { /* exited meanwhile */ }
      if (!await waitGone(pid, 20_000)) try { process.kill(pid, 'SIGKILL'); } catch { /* exited meanwhile */ }
      await waitGone(pid, 5_000);
    }
    for (const c of family.reverse()) {
      if (!alive(c)) continue;
      try { process.kill(c, 'SIGTERM'); } catch { /* gone meanwhile */ }
      if (!await waitGone(c, 5_000)) try { process.kill(c, 'SIGKILL'); } catch { /* gone */ }
    }
    // dockerd leaves mounts behind when killed (netns, overlay merged dirs, shm).
    const mounts = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${dir}/`) || m.mountPoint.startsWith(`${dataRoot}/`));
    for (const m of mounts.reverse()) await sys.umount2(m.mountPoint, sys.constants.MNT_DETACH).catch(() => undefined);
    if (!o.keepDir) await rm(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + (opts.startTimeoutMs ?? 60_000);
  for (;;) {
    if (await docker(['version', '--format', '{{.Server.Version}}']).then(() => true, () => false)) break;
    if (exited !== null || Date.now() > deadline) {
      const tail = readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n');
      await stop({ keepDir: false }).catch(() => undefined);
      throw new Error(exited !== null
        ? `dockerd exited (${exited}) before answering; last log lines:\n${tail}`
        : `dockerd did not answer docker version within ${opts.startTimeoutMs ?? 60_000} ms; last log lines:\n${tail}`);
    }
    await sleep(100);
  }
  return { dir, dataRoot, execRoot, host, pid, logFile, docker, stop };
}
