// Issue 16: what per-operation locks and shared mount holds cost.
// 1. overlay2 create+get+put per layer (store lock, layer lock, hold record, on every
//    call) vs the bare work a layer is: mkdir of its dirs + mount(2) + umount2(2).
// 2. Throughput under contention: 2 processes × N layers (create+get+put+remove) at once
//    vs 1 process × 2N, on one root (wall time of the whole batch, process start excluded).
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { comparePair, summarize } from '../harness.mjs';

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'multiproc-child.mjs');

export async function multiprocCases({ base, pairs, cairn, sys, repo }) {
  const root = `${base}/root-multiproc`;
  let driver;
  try {
    driver = await cairn.openDriver({ root, driver: 'overlay2' });
  } catch (err) {
    return [{ name: 'overlay2 create+get+put (locks)', skipped: `cannot open overlay2 here: ${err.message}` }];
  }
  const results = [];
  await driver.create('base', null);
  await driver.applyDiff('base', null, cairn.packEntries([{ header: { name: 'etc', type: 'dir', mode: 0o755 } }]));
  const baseDiff = `${driver.home}/base/diff`;
  results.push(await comparePair({
    name: 'overlay2 create+get+put per layer, with locks', pairs: Math.max(pairs, 20), referenceName: 'mkdir+mount+umount',
    setup: (side, i) => (side === 'cairn'
      ? { id: `c${i}`, teardown: () => driver.remove(`c${i}`) }
      : { dir: `${base}/bare${i}`, teardown: () => rmSync(`${base}/bare${i}`, { recursive: true, force: true }) }),
    cairn: async (ctx) => {
      await driver.createReadWrite(ctx.id, 'base');
      await driver.get(ctx.id);
      await driver.put(ctx.id);
    },
    reference: async (ctx) => {
      for (const d of ['diff', 'work', 'merged']) mkdirSync(`${ctx.dir}/${d}`, { recursive: true });
      await sys.mount('overlay', `${ctx.dir}/merged`, 'overlay', 0, `lowerdir=${baseDiff},upperdir=${ctx.dir}/diff,workdir=${ctx.dir}/work`);
      await sys.umount2(`${ctx.dir}/merged`, 0);
    },
  }));
  // 2 × N in parallel vs 1 × 2N: each side starts its processes, lets them open the
  // driver, then times the batch from "go" to the last "done".
  const n = 40;
  const batch = async (procs, each) => {
    const children = [];
    for (let p = 0; p < procs; p++) {
      const child = spawn(process.execPath, [CHILD, root, `p${p}`, String(each), join(repo, 'packages/cairnfs/dist/index.js')], { stdio: ['pipe', 'pipe', 'inherit'] });
      const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
      children.push({ child, lines });
    }
    for (const c of children) if ((await c.lines.next()).value !== 'ready') throw new Error('bench child did not open the driver');
    const t0 = performance.now();
    for (const c of children) c.child.stdin.write('go\n');
    let cpu = 0;
    for (const c of children) {
      const line = (await c.lines.next()).value ?? '';
      if (!line.startsWith('done ')) throw new Error(`bench child failed: ${line}`);
      cpu += Number(line.slice(5));
    }
    const ms = performance.now() - t0;
    for (const c of children) { c.child.stdin.end(); await new Promise((r) => c.child.once('exit', r)); }
    return { ms, cpu };
  };
  const a = [];
  const b = [];
  const ca = [];
  const cb = [];
  const rounds = Math.max(3, Math.min(pairs, 5));
  await batch(2, 5); // warm-up: page cache, the probe's scratch mounts
  for (let i = 0; i < rounds; i++) {
    const two = await batch(2, n);
    const one = await batch(1, 2 * n);
    a.push(two.ms); ca.push(two.cpu);
    b.push(one.ms); cb.push(one.cpu);
  }
  results.push(summarize(`overlay2 2 processes × ${n} layers at once`, `1 process × ${2 * n}`, a, b, ca, cb, rounds));
  await driver.remove('base');
  await driver.cleanup();
  return results;
}
