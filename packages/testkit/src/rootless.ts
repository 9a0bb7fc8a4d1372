import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { repoRoot } from './vm.js';

/**
 * Running tests as a real unprivileged user through `cairn unshare` (newuidmap with
 * /etc/subuid ranges), as a rootless user would run cairn. The host-side test (root) makes
 * the user, then runs commands as it in a private mount namespace where the repository is
 * bound at {@link ROOTLESS_REPO}, so the user reaches the code whatever the permissions of
 * the directories above the checkout. Suites meant to run inside are named
 * `*.rootlesstest.mjs` (a name the host's jest never matches) and run in one jest process
 * there (see {@link runJestRootless}), like the VM suites.
 */

/** The unprivileged user the rootless tests make and run as. */
export const ROOTLESS_USER = 'cairn-rootless';
/** Where the repository appears to that user. */
export const ROOTLESS_REPO = '/run/cairn-rootless-repo';

/** Why rootless tests cannot run here (null when they can), naming what to install or enable. */
export function rootlessMissingReason(): string | null {
  if (process.getuid?.() !== 0) return 'the rootless tests are started as root (they create their unprivileged user)';
  for (const tool of ['newuidmap', 'newgidmap', 'runuser', 'useradd', 'unshare']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
      return `${tool} is missing; run scripts/install-deps.sh (${tool.startsWith('new') ? 'Debian uidmap' : 'util-linux/passwd'})`;
    }
  }
  const r = spawnSync('unshare', ['--user', '--map-root-user', 'true'], { encoding: 'utf8' });
  if (r.status !== 0) return `user namespaces are disabled (${r.stderr.trim()}); enable them: sysctl user.max_user_namespaces=15000`;
  if (!existsSync(join(repoRoot, 'packages', 'cairnfs', 'dist', 'cli', 'main.js'))) return 'the cairn CLI is not built; run npm run build';
  return null;
}

export interface RootlessUser { name: string; uid: number; gid: number; home: string }

/**
 * The test user, made on first use (useradd -m; Debian's useradd gives it a subordinate
 * range, and one is added with usermod where it did not).
 */
export function ensureRootlessUser(): RootlessUser {
  if (spawnSync('id', ['-u', ROOTLESS_USER]).status !== 0) {
    const made = spawnSync('useradd', ['-m', '-s', '/bin/sh', ROOTLESS_USER], { encoding: 'utf8' });
    if (made.status !== 0) throw new Error(`useradd ${ROOTLESS_USER} failed: ${made.stderr}`);
  }
  for (const [file, flag] of [['/etc/subuid', '--add-subuids'], ['/etc/subgid', '--add-subgids']] as const) {
    const has = existsSync(file) && readFileSync(file, 'utf8').split('\n').some((l) => l.startsWith(`${ROOTLESS_USER}:`));
    if (!has) {
      const r = spawnSync('usermod', [flag, '200000-265535', ROOTLESS_USER], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`usermod ${flag} failed: ${r.stderr}`);
    }
  }
  const id = (flag: string) => Number(spawnSync('id', [flag, ROOTLESS_USER], { encoding: 'utf8' }).stdout.trim());
  const home = spawnSync('sh', ['-c', `getent passwd ${ROOTLESS_USER} | cut -d: -f6`], { encoding: 'utf8' }).stdout.trim();
  return { name: ROOTLESS_USER, uid: id('-u'), gid: id('-g'), home };
}

export interface RootlessRun { code: number | null; stdout: string; stderr: string }

/**
 * Runs `argv` as the test user. With `unshare` (the default) it runs inside
 * `cairn unshare`, i.e. as root of the user's own namespace; without, as the plain user.
 * Paths inside the repository must be given under {@link ROOTLESS_REPO}.
 */
export function runRootless(argv: string[], opts: { unshare?: boolean; env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<RootlessRun> {
  const user = ensureRootlessUser();
  const cli = join(ROOTLESS_REPO, 'packages', 'cairnfs', 'dist', 'cli', 'main.js');
  const inner = opts.unshare === false ? argv : [process.execPath, cli, 'unshare', '--', ...argv];
  // A root-owned mount namespace just for this run: the repository bound where the user can reach it.
  const script = `mkdir -p ${ROOTLESS_REPO} && mount --bind "$1" ${ROOTLESS_REPO} && shift && cd ${ROOTLESS_REPO} && exec runuser -u ${user.name} -- env "$@"`;
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: user.home, USER: user.name, LOGNAME: user.name, LANG: 'C.UTF-8',
    ...(opts.env ?? {}),
  };
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v ?? ''}`);
  return new Promise((resolve, reject) => {
    const child = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', repoRoot, '-i', ...envArgs, ...inner], {
      cwd: dirname(repoRoot), stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : null;
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.on('error', reject);
    child.on('close', (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

export interface RootlessJestRun extends RootlessRun {
  /** jest's `Tests:`, `Test Suites:` and `Time:` lines. */
  summary: string;
}

/**
 * One in-band jest run, as the test user inside `cairn unshare`, over `files` (paths
 * relative to the repository, `*.rootlesstest.mjs`), with CAIRN_REQUIRE_ALL=1: inside, the
 * backends are there, so a skip would be a bug.
 */
export async function runJestRootless(files: string[], opts: { timeoutSeconds: number; filter?: string; env?: NodeJS.ProcessEnv }): Promise<RootlessJestRun> {
  const user = ensureRootlessUser();
  const jest = join(ROOTLESS_REPO, 'node_modules', 'jest', 'bin', 'jest.js');
  // Plain ESM against the built packages, no transform (see the .rootlesstest.mjs files).
  const config = {
    rootDir: ROOTLESS_REPO, testEnvironment: 'node', transform: {}, testTimeout: 120000,
    roots: [...new Set(files.map((f) => `<rootDir>/${dirname(f)}`))], testMatch: files.map((f) => `<rootDir>/${f}`),
  };
  const run = await runRootless([
    process.execPath, jest, '--runInBand', '--ci', '--config', JSON.stringify(config), '--cacheDirectory', `/tmp/cairn-rootless-jest-${user.uid}`,
    ...(opts.filter ? ['-t', opts.filter] : []),
  ], {
    env: { CAIRN_REQUIRE_ALL: '1', NODE_OPTIONS: '--experimental-vm-modules --no-warnings', FORCE_COLOR: '0', TMPDIR: '/tmp', ...(opts.env ?? {}) },
    timeoutMs: opts.timeoutSeconds * 1000,
  });
  const summary = run.stderr.split('\n').filter((l) => /^(Tests|Test Suites|Time):/.test(l)).join('\n');
  return { ...run, summary };
}
