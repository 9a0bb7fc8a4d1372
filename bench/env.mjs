// What every bench case shares: the machine description, scratch dirs that are always
// removed, a tmpfs that is always unmounted, and running reference commands.
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';

function tarVersion() {
  try { return execFileSync('tar', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0]; } catch { return 'no GNU tar'; }
}

export function machine() {
  const cpuModel = cpus()[0]?.model ?? 'unknown';
  let fs = 'unknown';
  try { fs = execFileSync('findmnt', ['-no', 'FSTYPE', '-T', tmpdir()], { encoding: 'utf8' }).trim(); } catch { /* no findmnt */ }
  const memKb = Number(/MemTotal:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
  return {
    nproc: Number(execFileSync('nproc', { encoding: 'utf8' }).trim()),
    cpu: cpuModel,
    memGiB: Math.round(memKb / 1024 / 1024),
    kernel: execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim(),
    node: process.version,
    gnuTar: tarVersion(),
    repoDiskFs: fs,
    loadavg: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
  };
}

/** Scratch dirs for one bench run; `cleanup()` removes them and unmounts tmpfs. */
export class Scratch {
  constructor() {
    this.base = mkdtempSync(join(tmpdir(), 'cairn-bench-'));
    this.mounts = [];
  }
  dir(name) {
    return join(this.base, name);
  }
  /** A fresh tmpfs of `sizeMiB`, mounted inside the scratch dir. */
  tmpfs(name, sizeMiB) {
    const dir = mkdtempSync(join(this.base, name + '-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=755`, 'tmpfs', dir]);
    this.mounts.push(dir);
    return dir;
  }
  cleanup() {
    for (const m of this.mounts.reverse()) {
      try { execFileSync('umount', ['-l', m]); } catch { /* already gone */ }
    }
    rmSync(this.base, { recursive: true, force: true });
  }
}

/** Runs a reference command synchronously, output discarded, failing loudly. */
export function run(cmd, args, opts = {}) {
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'], ...opts });
}

let spawner = null;

/**
 * Runs a reference tool to completion through bench/spawner.mjs (a small launcher process,
 * so the bench process itself never forks between timed runs: see there) and resolves to
 * { cpuMs }, the tool's own user+system CPU. Fails when it exits non-zero. `env`: the
 * tool's whole environment (default: the bench's).
 */
export function runReference(cmd, args, env = undefined) {
  if (spawner === null) {
    const child = spawn(process.execPath, [new URL('./spawner.mjs', import.meta.url).pathname], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    spawner = { child, lines, queue: Promise.resolve() };
    child.unref();
    process.once('exit', () => child.kill());
  }
  const s = spawner;
  const result = s.queue.then(async () => {
    s.child.stdin.write(JSON.stringify([cmd, args, env ?? null]) + '\n');
    const { value, done } = await s.lines.next();
    if (done) throw new Error('bench/spawner.mjs exited');
    const r = JSON.parse(value);
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.error ?? `exit status ${r.status}`}`);
    return { cpuMs: r.cpuMs };
  });
  s.queue = result.catch(() => undefined);
  return result;
}

/** Ends the reference launcher (the bench's last step; also done on exit). */
export function stopReferences() {
  if (spawner === null) return;
  spawner.child.stdin.end();
  spawner = null;
}

export function rmrf(p) {
  rmSync(p, { recursive: true, force: true });
}

export function isRoot() {
  return process.getuid?.() === 0;
}
