#!/usr/bin/env node
// Per-call cost of the addon vs spawning the equivalent tool, on a private tmpfs.
// Run as root after `npx tsc -b`: node packages/sys/bench/per-call.mjs
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as sys from '../dist/index.js';

const N = 20000; // addon iterations
const SPAWNS = 200; // tool iterations (each is a fork+exec)

const dir = mkdtempSync(join(tmpdir(), 'cairn-sys-bench-'));
await sys.mount('tmpfs', dir, 'tmpfs', 0);

function perCall(label, n, fn) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn(i);
  const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
  console.log(`${label.padEnd(44)} ${us < 100 ? us.toFixed(2) : us.toFixed(0)} µs/call  (n=${n})`);
}

async function perCallAsync(label, n, fn) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await fn(i);
  const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
  console.log(`${label.padEnd(44)} ${us.toFixed(2)} µs/call  (n=${n}, awaited one by one)`);
}

function run(cmd, args) {
  const r = spawnSync(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}

try {
  const { S_IFCHR } = sys.constants;
  mkdirSync(join(dir, 'a')); mkdirSync(join(dir, 'b')); mkdirSync(join(dir, 'c'));
  perCall('mknodSync 0/0 whiteout', N, (i) => sys.mknodSync(join(dir, 'a', `w${i}`), S_IFCHR, 0, 0));
  await perCallAsync('mknod (async) 0/0 whiteout', N, (i) => sys.mknod(join(dir, 'b', `w${i}`), S_IFCHR, 0, 0));
  perCall('spawn mknod(1) c 0 0', SPAWNS, (i) => run('mknod', ['-m', '000', join(dir, 'c', `w${i}`), 'c', '0', '0']));

  const f = join(dir, 'file');
  writeFileSync(f, '');
  const value = Buffer.from('0100000200200000000000000000000000000000', 'hex'); // a security.capability-sized value
  perCall('lsetxattrSync trusted.x (20 B)', N, (i) => sys.lsetxattrSync(f, `trusted.x${i % 100}`, value));
  await perCallAsync('lsetxattr (async) trusted.x (20 B)', N, (i) => sys.lsetxattr(f, `trusted.y${i % 100}`, value));
  perCall('lgetxattrSync trusted.x', N, (i) => sys.lgetxattrSync(f, `trusted.x${i % 100}`));
  perCall('spawn setfattr(1) -n trusted.z', SPAWNS, (i) => run('setfattr', ['-h', '-n', `trusted.z${i % 100}`, '-v', '0x0100', f]));

  const m = join(dir, 'm');
  mkdirSync(m);
  await perCallAsync('mount tmpfs + umount2', 2000, async () => {
    await sys.mount('tmpfs', m, 'tmpfs', 0);
    await sys.umount2(m);
  });
  await perCallAsync('fsMount tmpfs + umount2', 2000, async () => {
    await sys.fsMount('tmpfs', null, [], m);
    await sys.umount2(m);
  });
  perCall('spawn mount(8) -t tmpfs + umount(8)', SPAWNS, () => {
    run('mount', ['-t', 'tmpfs', 'tmpfs', m]);
    run('umount', [m]);
  });
} finally {
  await sys.umount2(dir, sys.constants.MNT_DETACH);
  rmSync(dir, { recursive: true, force: true });
}
