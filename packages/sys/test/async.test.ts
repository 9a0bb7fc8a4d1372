import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { constants, mknod, lsetxattr, lgetxattr, llistxattr, fsMount, umount2 } from '@cairnfs/sys';
import { scratch, type Scratch } from './helpers.js';

let s: Scratch;
beforeEach(async () => {
  s = await scratch();
});
afterEach(async () => {
  await s.cleanup();
});

/** Counts setImmediate turns and the longest gap between them until stop() is called. */
function watchLoop(): { stop(): { ticks: number; maxGapMs: number } } {
  let ticks = 0;
  let maxGap = 0;
  let last = performance.now();
  let running = true;
  const tick = (): void => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
    ticks++;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  return {
    stop() {
      running = false;
      return { ticks, maxGapMs: maxGap };
    },
  };
}

test('the event loop keeps turning while 8 chains of 300 awaited async calls run', async () => {
  const f = join(s.dir, 'file');
  await writeFile(f, '');
  const watch = watchLoop();
  // Each await needs the completion to come back through the event loop. Were the calls
  // synchronous, every promise would be settled on creation, the chains would finish in
  // microtasks and not one setImmediate turn would run before they end.
  const chain = async (round: number, c: number): Promise<void> => {
    for (let i = 0; i < 100; i++) {
      await mknod(join(s.dir, `n${round}-${c}-${i}`), constants.S_IFIFO | 0o644, 0, 0);
      await lsetxattr(f, `user.k${c}`, Buffer.from([i]));
      expect(await lgetxattr(f, `user.k${c}`)).not.toBeNull();
    }
  };
  await Promise.all(Array.from({ length: 8 }, (_, c) => chain(0, c)));
  const { ticks, maxGapMs } = watch.stop();
  expect(ticks).toBeGreaterThan(50);
  // The longest gap, best of up to three rounds: a call that blocked the loop would do so in
  // each, while a machine under load (CI's sanitizer step at load 10 saw 503 ms once) stalls
  // the whole process only now and then.
  let bestGapMs = maxGapMs;
  for (let round = 1; round < 3 && bestGapMs >= 250; round++) {
    const again = watchLoop();
    await Promise.all(Array.from({ length: 8 }, (_, c) => chain(round, c)));
    bestGapMs = Math.min(bestGapMs, again.stop().maxGapMs);
  }
  expect(bestGapMs).toBeLessThan(250);
  expect((await llistxattr(f)).length).toBe(8);
});

test('each awaited mount and umount yields to the event loop', async () => {
  const points = Array.from({ length: 20 }, (_, i) => join(s.dir, `m${i}`));
  for (const p of points) await mkdir(p);
  const watch = watchLoop();
  for (const p of points) {
    await fsMount('tmpfs', null, [['size', '1m']], p);
    await umount2(p);
  }
  const { ticks } = watch.stop();
  expect(ticks).toBeGreaterThanOrEqual(20);
});
