// kill -9 at random moments while a child process creates, applies, mounts and removes
// vfs layers; after each kill the home must reopen clean (see testkit/src/crash.ts).
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { vfsDriver } from '@cairnfs/vfs';
import { describeBackend, makeLoopFs, killedInsidePlans, runCrashTrials } from '@cairnfs/testkit';
import type { LoopFs } from '@cairnfs/testkit';
import { crashSeed, crashTrials } from './reliability-helpers.js';

/** Layer ids vfs has anything of on disk: a directory or a metadata file (either alone is an orphan). */
async function vfsOnDisk(home: string): Promise<string[]> {
  const dirs = await readdir(join(home, 'dir')).catch(() => [] as string[]);
  const metas = (await readdir(join(home, 'meta')).catch(() => [] as string[])).map((n) => (n.endsWith('.json') ? n.slice(0, -5) : `meta/${n}`));
  return [...new Set([...dirs, ...metas])];
}

describeBackend('root', process.getuid?.() === 0 ? null : 'the vfs kill trials mount read-only views and need root', () => {
  // On a tmpfs: a SIGKILL keeps the page cache, so fsync is pure cost here (power loss is tested apart).
  let fs: LoopFs;
  beforeAll(async () => { fs = await makeLoopFs('tmpfs', { sizeMiB: 512 }); });
  afterAll(async () => { await fs?.dispose(); });

  test(`vfs survives ${crashTrials(200)} SIGKILLs at random moments with every finished layer intact and no orphans`, async () => {
    const seed = crashSeed();
    const report = await runCrashTrials({ base: fs.dir, factory: vfsDriver, trials: crashTrials(200), seed, listOnDisk: vfsOnDisk, log: (l) => console.log(l) });
    console.log(`vfs crash trials (seed ${seed}): ${JSON.stringify(report)}`);
    expect(report.trials).toBe(crashTrials(200));
    // Most kills must land inside driver work, or the test proves little.
    expect(killedInsidePlans(report)).toBeGreaterThanOrEqual(report.trials / 3);
  }, 600_000);

  test(`vfs survives ${crashTrials(60)} SIGKILLs while a second live process keeps working on the same root: it never fails nor waits past its lock timeout, its mounts stay`, async () => {
    const seed = crashSeed();
    const report = await runCrashTrials({ base: fs.dir, factory: vfsDriver, trials: crashTrials(60), seed, listOnDisk: vfsOnDisk, witness: true });
    console.log(`vfs crash trials with a witness (seed ${seed}): ${JSON.stringify(report)}`);
    expect(report.trials).toBe(crashTrials(60));
    expect(report.witnessOps).toBeGreaterThan(crashTrials(60));
  }, 600_000);

  test('a trial step that overruns its deadline fails naming the step, the seed and the processes around, instead of hanging', async () => {
    // 1 ms is too short for anything, so the first awaited step (the child starting) overruns.
    const run = runCrashTrials({ base: fs.dir, factory: vfsDriver, trials: 1, seed: 7, listOnDisk: vfsOnDisk, stepDeadlineMs: 1 });
    await expect(run).rejects.toThrow(/crash trial 0 of vfs \(CAIRN_CRASH_SEED=7\): the child starting took over 1 ms \(a hang\?\); processes:\n\s*PID\s+PGID\s+STAT/);
  }, 60_000);
});
