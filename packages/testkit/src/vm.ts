import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Running tests inside the throwaway VM of scripts/run-in-vm.sh (Debian's 6.1 kernel
 * under qemu), for what this host's kernel lacks: device-mapper, xfs/ext4 quotas. One boot
 * costs seconds and every process start in the guest is slow, so a suite runs as ONE
 * in-band jest run in the guest over files named `*.vmtest.ts` (a name the host's jest
 * never matches), and a host-side test launches it and reports its result.
 */

/** The repository root (this file is packages/testkit/src/vm.ts). */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const runInVmScript = join(repoRoot, 'scripts', 'run-in-vm.sh');
export const vmCacheDir = process.env.CAIRN_VM_CACHE ?? '/var/cache/cairn-vm';

/** Why the test VM cannot run here (null when it can), naming the fix. For describeBackend('vm', …). */
export function vmMissingReason(): string | null {
  const onPath = (process.env.PATH ?? '').split(delimiter).some((d) => d !== '' && existsSync(join(d, 'qemu-system-x86_64')));
  if (!onPath) return 'qemu-system-x86_64 is not installed; run scripts/vm/prepare.sh as root';
  if (!existsSync(join(vmCacheDir, 'ready'))) return `no VM kernel cache at ${vmCacheDir}; run scripts/vm/prepare.sh as root`;
  return null;
}

/** True inside the guest (run-in-vm.sh sets CAIRN_IN_VM=1). */
export const inTestVm = process.env.CAIRN_IN_VM === '1';

export interface VmRunResult { code: number | null; stdout: string; stderr: string; seconds: number }

/** Runs one command in a fresh VM through scripts/run-in-vm.sh and collects what it printed. */
export function runInVm(args: string[], opts: { timeoutSeconds?: number; env?: NodeJS.ProcessEnv } = {}): Promise<VmRunResult> {
  const started = process.hrtime.bigint();
  const argv = opts.timeoutSeconds ? ['--timeout', String(opts.timeoutSeconds), ...args] : args;
  return new Promise((resolve, reject) => {
    const child = spawn(runInVmScript, argv, { cwd: repoRoot, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.on('error', reject);
    child.on('close', (code) => {
      resolve({ code, stdout, stderr, seconds: Number(process.hrtime.bigint() - started) / 1e9 });
    });
  });
}

export interface VmJestRun extends VmRunResult {
  /** jest's `Tests:`, `Test Suites:` and `Time:` lines. */
  summary: string;
}

/**
 * Boots the VM once and runs jest in band over `files` (paths relative to the repository
 * root, e.g. `packages/core/test/vm/quota.vmtest.ts`), with CAIRN_REQUIRE_ALL=1: in the
 * guest the backend is there, so a skip would be a bug. `filter` is jest's `-t`.
 */
export async function runJestInVm(files: string[], opts: { timeoutSeconds: number; filter?: string }): Promise<VmJestRun> {
  const jest = join(repoRoot, 'node_modules', 'jest', 'bin', 'jest.js');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CAIRN_REQUIRE_ALL: '1',
    CAIRN_BACKEND_LOG: '',
    NODE_OPTIONS: '--experimental-vm-modules --no-warnings',
    FORCE_COLOR: '0',
  };
  const escaped = files.map((f) => `<rootDir>/${f}`);
  // The guest's /tmp is a fresh tmpfs each boot, so jest's default cache (transformed
  // sources, haste map) would be rebuilt under emulation every run; keep it on the share.
  const cacheDirectory = join(repoRoot, 'node_modules', '.cache', 'cairn-vm-jest');
  const run = await runInVm([
    process.execPath, jest, '--runInBand', '--ci', '--cacheDirectory', cacheDirectory,
    '--roots', ...[...new Set(files.map((f) => `<rootDir>/${dirname(f)}`))],
    '--testMatch', ...escaped,
    ...(opts.filter ? ['-t', opts.filter] : []),
  ], { timeoutSeconds: opts.timeoutSeconds, env });
  const summary = run.stderr.split('\n').filter((l) => /^(Tests|Test Suites|Time):/.test(l)).join('\n');
  return { ...run, summary };
}
