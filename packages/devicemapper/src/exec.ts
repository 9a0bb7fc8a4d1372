import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { CairnError, errnoCode } from '@cairnfs/core';

export interface RunResult { stdout: string; stderr: string }

/** A failed tool run, kept so callers can classify it (busy, exists, no space). */
export class CommandFailure extends Error {
  constructor(readonly argv: readonly string[], readonly exitCode: number | null, readonly stderr: string, readonly stdout: string) {
    super(`${argv.join(' ')} failed (exit ${exitCode ?? 'signal'}): ${stderr.trim() || stdout.trim() || 'no output'}`);
    this.name = 'CommandFailure';
  }
}

/**
 * True when udev is running and will create /dev/mapper nodes. Without it (containers,
 * the test VM) dmsetup must make the nodes itself: DM_DISABLE_UDEV=1, or thin tables that
 * name the pool fail with ENODEV.
 */
export function udevRunning(): boolean {
  return existsSync('/run/udev/control');
}

const toolEnv: NodeJS.ProcessEnv = {
  ...process.env,
  LC_ALL: 'C',
  ...(udevRunning() ? {} : { DM_DISABLE_UDEV: '1' }),
};

/**
 * Runs a tool, no shell. A missing tool is ERR_PREREQUISITES naming the package; a
 * non-zero exit is a {@link CommandFailure} for the caller to classify.
 */
export function run(cmd: string, args: readonly string[], pkg: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: toolEnv, maxBuffer: 16 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) return resolve({ stdout, stderr });
      if (errnoCode(err) === 'ENOENT') {
        return reject(new CairnError('ERR_PREREQUISITES', `${cmd} is not installed; install ${pkg}`, { subject: cmd, cause: err }));
      }
      const code = typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null;
      reject(new CommandFailure([cmd, ...args], code, stderr, stdout));
    });
  });
}

/** Turns a tool failure into a CairnError with the code its output implies. */
export function classify(err: unknown, what: string, subject?: string): unknown {
  if (!(err instanceof CommandFailure)) return err;
  const text = err.stderr + err.stdout;
  if (/No space left|out of data space|out of metadata space/i.test(text)) {
    return new CairnError('ERR_NO_SPACE', `${what}: the thin pool is out of space (${text.trim()}). Grow the pool or remove layers.`, { subject, cause: err });
  }
  if (/Device or resource busy|EBUSY/i.test(text)) {
    return new CairnError('ERR_LAYER_IN_USE', `${what}: the device is busy (${text.trim()}); something still has it open or mounted.`, { subject, cause: err });
  }
  if (/Permission denied|Operation not permitted/i.test(text)) {
    return new CairnError('ERR_PREREQUISITES', `${what}: not permitted (${text.trim()}); the devicemapper driver must run as root.`, { subject, cause: err });
  }
  return new CairnError('ERR_BACKEND_FAILED', `${what}: ${err.message}`, { subject, cause: err });
}
