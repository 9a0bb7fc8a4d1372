// Rootless: starting a command as root of a new user namespace mapped with the caller's
// /etc/subuid and /etc/subgid ranges (what `podman unshare` does), and saying what a host
// has and lacks for that.
import { spawn, spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { userInfo } from 'node:os';
import { delimiter, join } from 'node:path';
import type { IdMap, IdMappings } from './driver.js';
import { CairnError } from './errors.js';

/**
 * Set in the environment of a command started by {@link userNamespaceCommand}: the real
 * uid of the user who started it. A process that finds it knows it runs rootless (and a
 * runtime that re-executes itself knows not to do it twice).
 */
export const ROOTLESS_UID_ENV = 'CAIRN_ROOTLESS_UID';

export interface SubordinateRange { start: number; count: number }

/**
 * The ranges /etc/subuid (or /etc/subgid) gives `user` (lines `name:start:count` or
 * `uid:start:count`), in file order. A missing file is no ranges.
 */
export function subordinateRanges(file: string, user: { name: string; uid: number }): SubordinateRange[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: SubordinateRange[] = [];
  for (const line of text.split('\n')) {
    const m = /^([^:#\s]+):(\d+):(\d+)\s*$/.exec(line.trim());
    if (!m || (m[1] !== user.name && m[1] !== String(user.uid))) continue;
    const count = Number(m[3]);
    if (count > 0) out.push({ start: Number(m[2]), count });
  }
  return out;
}

/**
 * The maps of a rootless namespace, as podman makes them: container 0 is the caller
 * itself, container 1… the subordinate ranges in order.
 */
export function rootlessIdMappings(uid: number, gid: number, subuid: readonly SubordinateRange[], subgid: readonly SubordinateRange[]): IdMappings {
  const build = (self: number, ranges: readonly SubordinateRange[]): IdMap[] => {
    const maps: IdMap[] = [{ containerId: 0, hostId: self, size: 1 }];
    let next = 1;
    for (const r of ranges) {
      maps.push({ containerId: next, hostId: r.start, size: r.count });
      next += r.count;
    }
    return maps;
  };
  return { uidMap: build(uid, subuid), gidMap: build(gid, subgid) };
}

/** The first executable `name` on PATH (then /usr/bin, /usr/sbin, /bin), or null. */
export function findTool(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/sbin', '/bin', '/sbin'].filter(Boolean);
  for (const dir of dirs) {
    const path = join(dir, name);
    try {
      accessSync(path, fsConstants.X_OK);
      return path;
    } catch { /* next */ }
  }
  return null;
}

function currentUser(): { name: string; uid: number; gid: number } {
  const info = userInfo();
  return { name: info.username, uid: process.getuid?.() ?? info.uid, gid: process.getgid?.() ?? info.gid };
}

export interface UserNamespaceCommandOptions {
  stdio?: StdioOptions;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

// Runs in the new namespaces: says it is there, waits until the maps are written, then
// becomes the command. fd 3 is the channel to the parent, closed before the exec.
const TRAMPOLINE = 'echo ready >&3; read go <&3; exec 3<&-; [ "$go" = go ] || exit 125; exec "$@"';

/**
 * Starts `argv` (default: the user's shell) as root of a new user namespace, in a new mount
 * namespace it owns, mapped as `podman unshare` maps it: container 0 is the caller,
 * container 1… the caller's /etc/subuid and /etc/subgid ranges, written by the setuid
 * `newuidmap`/`newgidmap` (Debian `uidmap`). Inside, the command can mount (overlay with
 * userxattr, tmpfs, binds) and own files as every mapped id, so vfs and overlay2 can
 * import ordinary multi-user images. Mounts made inside vanish when the last process in
 * the namespace exits. `CAIRN_ROOTLESS_UID` in its environment holds the caller's uid.
 *
 * Resolves once the command runs with its maps; the caller waits for it to exit.
 * Called as real root it starts the command as it is, as podman does (root needs no
 * namespace). ERR_PREREQUISITES names what is missing: the uidmap tools, the ranges, or
 * user namespaces themselves.
 *
 * A Node runtime re-executes itself this way (a process cannot move its own threads into
 * a new user namespace):
 * ```ts
 * if (process.getuid() !== 0 && !process.env.CAIRN_ROOTLESS_UID) {
 *   const child = await userNamespaceCommand([process.execPath, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit' });
 *   child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)));
 * } else {
 *   // rootless (or real root) from here on: open drivers, import, mount…
 * }
 * ```
 */
export async function userNamespaceCommand(argv: readonly string[], opts: UserNamespaceCommandOptions = {}): Promise<ChildProcess> {
  const command = argv.length > 0 ? [...argv] : [process.env.SHELL || '/bin/sh'];
  const env = { ...(opts.env ?? process.env) };
  const user = currentUser();
  if (user.uid === 0) {
    return spawnNow(command[0]!, command.slice(1), { stdio: opts.stdio ?? 'inherit', env, ...(opts.cwd ? { cwd: opts.cwd } : {}) });
  }
  const plan = rootlessPlan(user);
  env[ROOTLESS_UID_ENV] = String(user.uid);
  const child = spawn('unshare', ['--user', '--mount', '--propagation', 'private', '--', '/bin/sh', '-c', TRAMPOLINE, 'sh', ...command], {
    stdio: [...stdioTriple(opts.stdio ?? 'inherit'), 'pipe'], env, ...(opts.cwd ? { cwd: opts.cwd } : {}),
  });
  const channel = child.stdio[3] as unknown as NodeJS.ReadWriteStream & { destroy(): void };
  try {
    await new Promise<void>((resolve, reject) => {
      let seen = '';
      const onData = (b: Buffer) => {
        seen += b.toString();
        if (seen.includes('ready')) { cleanup(); resolve(); }
      };
      const onExit = (code: number | null) => {
        cleanup();
        reject(new CairnError('ERR_PREREQUISITES', `unshare --user --mount exited (${code}) before the namespace was ready; user namespaces may be disabled for unprivileged users (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)`));
      };
      const onError = (err: Error) => { cleanup(); reject(new CairnError('ERR_PREREQUISITES', `cannot run unshare (util-linux): ${err.message}`, { cause: err })); };
      const cleanup = () => { channel.off('data', onData); child.off('exit', onExit); child.off('error', onError); };
      channel.on('data', onData);
      child.once('exit', onExit);
      child.once('error', onError);
    });
    for (const [tool, self, ranges] of [[plan.newuidmap, user.uid, plan.subuid], [plan.newgidmap, user.gid, plan.subgid]] as const) {
      const args = [String(child.pid), '0', String(self), '1'];
      let next = 1;
      for (const r of ranges) {
        args.push(String(next), String(r.start), String(r.count));
        next += r.count;
      }
      const r = spawnSync(tool, args, { encoding: 'utf8' });
      if (r.status !== 0) {
        throw new CairnError('ERR_PREREQUISITES',
          `${tool} ${args.join(' ')} failed: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}; check that ${tool} is setuid root and that /etc/subuid and /etc/subgid give ${user.name} these ranges`);
      }
    }
    channel.write('go\n');
    channel.end();
    return child;
  } catch (err) {
    child.kill('SIGKILL');
    channel.destroy();
    throw err;
  }
}

function stdioTriple(stdio: StdioOptions): Array<'inherit' | 'pipe' | 'ignore' | number | null | undefined> {
  if (typeof stdio === 'string') return [stdio as 'inherit', stdio as 'inherit', stdio as 'inherit'];
  return (stdio as Array<'inherit' | 'pipe' | 'ignore' | number | null | undefined>).slice(0, 3);
}

function spawnNow(cmd: string, args: string[], opts: Parameters<typeof spawn>[2]): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, opts!);
    child.once('spawn', () => resolve(child));
    child.once('error', reject);
  });
}

interface RootlessPlan {
  newuidmap: string;
  newgidmap: string;
  subuid: SubordinateRange[];
  subgid: SubordinateRange[];
}

function rootlessPlan(user: { name: string; uid: number }): RootlessPlan {
  const newuidmap = findTool('newuidmap');
  const newgidmap = findTool('newgidmap');
  if (!newuidmap || !newgidmap) {
    throw new CairnError('ERR_PREREQUISITES', 'newuidmap/newgidmap are not installed; install them (Debian/Ubuntu: apt-get install uidmap) to run rootless with subordinate ids');
  }
  const subuid = subordinateRanges('/etc/subuid', user);
  const subgid = subordinateRanges('/etc/subgid', user);
  if (subuid.length === 0 || subgid.length === 0) {
    throw new CairnError('ERR_PREREQUISITES',
      `${user.name} has no subordinate ${subuid.length === 0 ? 'uids in /etc/subuid' : 'gids in /etc/subgid'}; ` +
      `add a range as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${user.name}`);
  }
  return { newuidmap, newgidmap, subuid, subgid };
}

/** One fact about running rootless here, with what to do when it is missing. */
export interface RootlessFact { what: string; ok: boolean; detail: string }

/**
 * What this host offers an unprivileged user for `cairn unshare` and rootless drivers:
 * user namespaces, newuidmap/newgidmap, the user's ranges, overlay in a user namespace,
 * fuse-overlayfs. `user` defaults to the caller. Runs `unshare` a couple of times; creates
 * nothing that outlives it.
 */
export function rootlessReport(user: { name: string; uid: number } = currentUser()): RootlessFact[] {
  const facts: RootlessFact[] = [];
  const userns = spawnSync('unshare', ['--user', '--map-root-user', 'true'], { encoding: 'utf8' });
  facts.push({ what: 'user namespaces', ok: userns.status === 0,
    detail: userns.status === 0 ? 'unshare --user works' : `unshare --user failed (${(userns.stderr || userns.error?.message || '').trim()}); enable them: sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces=15000` });
  for (const tool of ['newuidmap', 'newgidmap']) {
    const path = findTool(tool);
    const setuid = path !== null && (statSync(path).mode & 0o4000) !== 0;
    facts.push({ what: tool, ok: setuid || (path !== null && user.uid === 0),
      detail: path === null ? 'missing: apt-get install uidmap' : setuid ? `${path} (setuid)` : `${path} is not setuid root (or lacks file capabilities): reinstall uidmap` });
  }
  for (const [file, flag] of [['/etc/subuid', '--add-subuids'], ['/etc/subgid', '--add-subgids']] as const) {
    const ranges = subordinateRanges(file, user);
    facts.push({ what: `${file} for ${user.name}`, ok: ranges.length > 0,
      detail: ranges.length > 0 ? ranges.map((r) => `${r.start}:${r.count}`).join(', ') : `none: usermod ${flag} 100000-165535 ${user.name}` });
  }
  // Overlay inside a user namespace (Linux 5.11+, with userxattr), tried on a tmpfs of its own.
  const script = 'd=$(mktemp -d) && mount -t tmpfs none "$d" && mkdir "$d/l" "$d/u" "$d/w" "$d/m" && ' +
    'mount -t overlay overlay -o "userxattr,lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m"';
  const ovl = spawnSync('unshare', ['--user', '--map-root-user', '--mount', 'sh', '-c', script], { encoding: 'utf8' });
  facts.push({ what: 'overlay in a user namespace', ok: ovl.status === 0,
    detail: ovl.status === 0 ? 'works (mounted with userxattr): overlay2 runs rootless on the kernel overlay'
      : `refused (${(ovl.stderr || '').trim()}): use vfs, or overlay2.mount_program=/usr/bin/fuse-overlayfs` });
  const fuse = findTool('fuse-overlayfs');
  let fuseDetail = fuse === null ? 'missing (only needed where the kernel cannot mount overlay in a user namespace): apt-get install fuse-overlayfs' : fuse;
  if (fuse !== null) {
    try {
      if ((statSync('/dev/fuse').mode & 0o006) !== 0o006) fuseDetail += '; /dev/fuse is not 0666: chmod 0666 /dev/fuse so unprivileged users can mount';
    } catch {
      fuseDetail += '; /dev/fuse is missing: modprobe fuse';
    }
  }
  facts.push({ what: 'fuse-overlayfs', ok: fuse !== null, detail: fuseDetail });
  return facts;
}
