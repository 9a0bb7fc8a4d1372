import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is packages/devicemapper/test/vm.ts). */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const runInVm = join(repoRoot, 'scripts', 'run-in-vm.sh');
export const vmCache = process.env.CAIRN_VM_CACHE ?? '/var/cache/cairn-vm';

/** Why the devicemapper VM cannot run here (null when it can), naming the fix. */
export function vmMissingReason(): string | null {
  const onPath = (process.env.PATH ?? '').split(delimiter).some((d) => d !== '' && existsSync(join(d, 'qemu-system-x86_64')));
  if (!onPath) return 'qemu-system-x86_64 is not installed; run scripts/vm/prepare.sh as root';
  if (!existsSync(join(vmCache, 'ready'))) return `no VM kernel cache at ${vmCache}; run scripts/vm/prepare.sh as root`;
  return null;
}

export interface VmRun { code: number | null; stdout: string; stderr: string; seconds: number }

/** Runs one command in a fresh VM through scripts/run-in-vm.sh and collects what it printed. */
export function runVm(args: string[], opts: { timeoutSeconds?: number; env?: NodeJS.ProcessEnv } = {}): Promise<VmRun> {
  const started = process.hrtime.bigint();
  const argv = opts.timeoutSeconds ? ['--timeout', String(opts.timeoutSeconds), ...args] : args;
  return new Promise((resolve, reject) => {
    const child = spawn(runInVm, argv, { cwd: repoRoot, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
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
