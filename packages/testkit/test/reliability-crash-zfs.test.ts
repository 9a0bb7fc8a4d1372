// kill -9 at random moments while a child process creates, applies, mounts and removes
// zfs layers on zfs-fuse; after each kill the home must reopen clean (see
// testkit/src/crash.ts). Few trials: every layer operation is a `zfs` process talking
// to one userspace daemon, so a trial costs seconds, not milliseconds.
import { zfsDriver } from '@cairnfs/zfs';
import { describeBackend, runCrashTrials, startZfsFuse, zfsFuseMissing } from '@cairnfs/testkit';
import type { ZfsFuseFixture } from '@cairnfs/testkit';
import { crashSeed, crashTrials } from './reliability-helpers.js';

/**
 * What the zfs driver has under its parent dataset, as layer ids: every dataset
 * `<parent>/<id>` (a dataset deeper down shows as `dataset:<name>`), and a marker for
 * every snapshot that should not be there: an origin snapshot `<parent>/<p>@<c>` whose
 * clone `<c>` is gone (`snapshot:…`), or one left without deferred destruction, which
 * would outlive its clone (`undeferred:…`). Markers never equal a finished layer's id.
 */
function zfsOnDisk(fixture: ZfsFuseFixture, parent: string) {
  return async (): Promise<string[]> => {
    const text = await fixture.zfs('list', '-H', '-r', '-t', 'all', '-o', 'name,defer_destroy', parent);
    const rows = text.split('\n').filter(Boolean).map((l) => l.split('\t') as [string, string]);
    const datasets = new Set<string>();
    const out: string[] = [];
    for (const [name] of rows) {
      if (name === parent || name.includes('@')) continue;
      const rest = name.slice(parent.length + 1);
      datasets.add(rest);
      out.push(rest.includes('/') ? `dataset:${name}` : rest);
    }
    for (const [name, deferred] of rows) {
      if (!name.includes('@')) continue;
      const [owner, child] = name.slice(parent.length + 1).split('@') as [string, string];
      if (owner.includes('/') || !datasets.has(child)) out.push(`snapshot:${name}`);
      else if (deferred !== 'on') out.push(`undeferred:${name}`);
    }
    return out;
  };
}

describeBackend('zfs', zfsFuseMissing(), () => {
  let fixture: ZfsFuseFixture;
  let parent: string;
  let base: string;
  beforeAll(async () => {
    fixture = await startZfsFuse({ sizeBytes: 1024 ** 3 });
    ({ dataset: parent, path: base } = await fixture.newFilesystem('crash'));
  }, 120_000);
  afterAll(async () => { await fixture?.dispose(); }, 120_000);

  test(`zfs survives ${crashTrials(10)} SIGKILLs at random moments with every finished layer intact, no orphan dataset or snapshot, no mount`, async () => {
    const seed = crashSeed();
    console.log(`zfs crash trials: CAIRN_CRASH_SEED=${seed}`);
    const report = await runCrashTrials({
      base, factory: zfsDriver, trials: crashTrials(10), seed, bytes: 16 * 1024, maxLayers: 4, planMs: 700, openMs: 600,
      listOnDisk: zfsOnDisk(fixture, parent), log: (l) => console.log(l),
    });
    console.log(`zfs crash trials (seed ${seed}): ${JSON.stringify(report)}`);
    expect(report.trials).toBe(crashTrials(10));
    // Most kills must land inside driver work, or the run proves little; with only 10
    // trials a plain majority is a coin toss (5 of 10 plans finished once; about a third finish), so: at least 30 %.
    expect(report.trials - report.finished).toBeGreaterThanOrEqual(Math.ceil(report.trials * 0.3));
  }, 300_000);
});
