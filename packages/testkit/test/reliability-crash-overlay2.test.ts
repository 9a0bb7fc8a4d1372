// kill -9 at random moments while a child process creates, applies, mounts and removes
// overlay2 layers; after each kill the home must reopen clean (see testkit/src/crash.ts).
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { overlay2Driver } from '@cairnfs/overlay2';
import { describeBackend, makeLoopFs, killedInsidePlans, runCrashTrials } from '@cairnfs/testkit';
import type { LoopFs } from '@cairnfs/testkit';
import { crashSeed, crashTrials, overlayMissing } from './reliability-helpers.js';

/**
 * Layer ids overlay2 has on disk, plus a marker for every inconsistency between the
 * layer directories and the l/ short links (a dangling link, a layer whose link file
 * names no l/ entry), so the harness reports them as orphans.
 */
async function overlay2OnDisk(home: string): Promise<string[]> {
  const out: string[] = [];
  const layers = (await readdir(home)).filter((n) => n !== 'l' && !n.startsWith('.'));
  const shorts = new Set(await readdir(join(home, 'l')).catch(() => [] as string[]));
  for (const id of layers) {
    out.push(id);
    const short = (await readFile(join(home, id, 'link'), 'utf8').catch(() => '')).trim();
    if (!shorts.has(short)) out.push(`missing-l/${id}`);
  }
  for (const short of shorts) {
    const target = await readlink(join(home, 'l', short));
    if (!(await stat(join(home, 'l', target)).then(() => true, () => false))) out.push(`dangling-l/${short}`);
  }
  return out;
}

/** What overlay2's probe leaves in the home when killed mid-probe: its scratch dir, maybe with a live mount. */
async function probeLeftovers(home: string): Promise<string[]> {
  return (await readdir(home).catch(() => [] as string[])).filter((n) => n.startsWith('.cairn-overlay-probe-')).map((n) => join(home, n));
}

describeBackend('overlay', overlayMissing(), () => {
  // On a tmpfs: a SIGKILL keeps the page cache, so fsync is pure cost here (power loss is tested apart).
  let fs: LoopFs;
  beforeAll(async () => { fs = await makeLoopFs('tmpfs', { sizeMiB: 512 }); });
  afterAll(async () => { await fs?.dispose(); });

  test(`overlay2 survives ${crashTrials(200)} SIGKILLs at random moments with every finished layer intact, no orphans, no mounts`, async () => {
    const seed = crashSeed();
    const report = await runCrashTrials({ base: fs.dir, factory: overlay2Driver, trials: crashTrials(200), seed, listOnDisk: overlay2OnDisk, knownDefect: probeLeftovers, log: (l) => console.log(l) });
    console.log(`overlay2 crash trials (seed ${seed}): ${JSON.stringify(report)}`);
    expect(report.trials).toBe(crashTrials(200));
    expect(killedInsidePlans(report)).toBeGreaterThanOrEqual(report.trials / 3);
    expect(report.knownDefectHits).toBe(0);
  }, 600_000);

  test(`overlay2 survives ${crashTrials(60)} SIGKILLs while a second live process keeps working on the same root: it never fails nor waits past its lock timeout, its mounts stay`, async () => {
    const seed = crashSeed();
    const report = await runCrashTrials({ base: fs.dir, factory: overlay2Driver, trials: crashTrials(60), seed, listOnDisk: overlay2OnDisk, knownDefect: probeLeftovers, witness: true });
    console.log(`overlay2 crash trials with a witness (seed ${seed}): ${JSON.stringify(report)}`);
    expect(report.trials).toBe(crashTrials(60));
    expect(report.knownDefectHits).toBe(0);
    expect(report.witnessOps).toBeGreaterThan(crashTrials(60));
  }, 600_000);

  // probeOverlay mounts a scratch overlay in the home itself (.cairn-overlay-probe-*/merged);
  // a kill mid-probe leaves dir and mount, which the next open must sweep (their flock is free).
  test('a kill during open leaves no overlay probe scratch directory or mount behind', async () => {
    const seed = crashSeed();
    const report = await runCrashTrials({ base: fs.dir, factory: overlay2Driver, trials: 30, seed, openKillShare: 1, listOnDisk: overlay2OnDisk, knownDefect: probeLeftovers });
    console.log(`overlay2 open-kill trials (seed ${seed}): ${JSON.stringify(report)}`);
    expect(report.knownDefectHits).toBe(0);
  }, 300_000);

  // applyDiff fills a fresh layer in a hidden sibling of diff/ and swaps it in with one
  // rename, so a kill mid-apply leaves the layer as it was (empty) or fully applied.
  test('a kill during applyDiff leaves the layer as it was or fully applied, never torn', async () => {
    const seed = crashSeed();
    const report = await runCrashTrials({ base: fs.dir, factory: overlay2Driver, trials: 40, seed, openKillShare: 0, listOnDisk: overlay2OnDisk, knownDefect: probeLeftovers });
    console.log(`overlay2 torn-apply trials (seed ${seed}): ${JSON.stringify(report)}`);
    expect(report.trials).toBe(40);
    expect(report.knownDefectHits).toBe(0);
  }, 300_000);
});
