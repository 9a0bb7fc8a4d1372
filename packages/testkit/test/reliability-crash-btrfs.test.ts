// kill -9 at random moments while a child process creates, applies, mounts and removes
// btrfs layers on a loopback btrfs; after each kill the home must reopen clean (see
// testkit/src/crash.ts). Fewer trials than vfs/overlay2: every subvolume create and
// delete commits a btrfs transaction on a loop device.
import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { btrfsDriver } from '@cairnfs/btrfs';
import { describeBackend, loopFsMissing, makeLoopFs, killedInsidePlans, runCrashTrials } from '@cairnfs/testkit';
import type { LoopFs } from '@cairnfs/testkit';
import { crashSeed, crashTrials } from './reliability-helpers.js';

const run = promisify(execFile);

/**
 * What the btrfs driver has on disk, as layer ids: every name under subvolumes/
 * (a `.staging-*` or `.trash-*` name is an interrupted create/remove, so an orphan),
 * every meta/<id>.json, and every subvolume btrfs itself lists below the home, by
 * its name under subvolumes/ (a subvolume nested deeper, or elsewhere in the home,
 * shows as `subvol:<path>`, which no finished layer matches).
 */
function btrfsOnDisk(mnt: string) {
  return async (home: string): Promise<string[]> => {
    const out = new Set<string>();
    for (const name of await readdir(join(home, 'subvolumes')).catch(() => [] as string[])) out.add(name);
    for (const name of await readdir(join(home, 'meta')).catch(() => [] as string[])) {
      if (name === 'qgroups-pending.json') continue;
      if (name.endsWith('.json')) out.add(name.slice(0, -5));
      else if (!name.startsWith('.')) out.add(`meta/${name}`);
    }
    const { stdout } = await run('btrfs', ['subvolume', 'list', mnt]);
    const homeRel = relative(mnt, home);
    for (const line of stdout.split('\n').filter(Boolean)) {
      const path = line.replace(/^.* path /, '').replace(/^<FS_TREE>\//, '');
      if (!path.startsWith(`${homeRel}/`)) continue;
      const rest = path.slice(homeRel.length + 1).split('/');
      out.add(rest.length === 2 && rest[0] === 'subvolumes' ? rest[1]! : `subvol:${path}`);
    }
    return [...out];
  };
}

describeBackend('btrfs', process.getuid?.() === 0 ? loopFsMissing('btrfs') : 'btrfs subvolumes need root', () => {
  let fs: LoopFs;
  beforeAll(async () => { fs = await makeLoopFs('btrfs', { sizeMiB: 512 }); });
  afterAll(async () => { await fs?.dispose(); });

  test(`btrfs survives ${crashTrials(40)} SIGKILLs at random moments with every finished layer intact, no orphan subvolume, no mount`, async () => {
    const seed = crashSeed();
    console.log(`btrfs crash trials: CAIRN_CRASH_SEED=${seed}`);
    const report = await runCrashTrials({ base: fs.dir, factory: btrfsDriver, trials: crashTrials(40), seed, listOnDisk: btrfsOnDisk(fs.dir), log: (l) => console.log(l) });
    console.log(`btrfs crash trials (seed ${seed}): ${JSON.stringify(report)}`);
    expect(report.trials).toBe(crashTrials(40));
    // Most kills must land inside driver work, or the test proves little.
    expect(killedInsidePlans(report)).toBeGreaterThanOrEqual(report.trials / 3);
  }, 600_000);

  test(`btrfs survives ${crashTrials(30)} SIGKILLs while a second live process keeps working on the same root: it never fails nor waits past its lock timeout`, async () => {
    const seed = crashSeed();
    const report = await runCrashTrials({ base: fs.dir, factory: btrfsDriver, trials: crashTrials(30), seed, listOnDisk: btrfsOnDisk(fs.dir), witness: true });
    console.log(`btrfs crash trials with a witness (seed ${seed}): ${JSON.stringify(report)}`);
    expect(report.trials).toBe(crashTrials(30));
    expect(report.witnessOps).toBeGreaterThan(crashTrials(30));
  }, 600_000);

  // Larger tars keep the child inside applyDiff for longer, so more kills land mid-apply.
  test('a kill during applyDiff of an 8 MiB tar leaves the layer as it was or fully applied, never torn', async () => {
    const seed = crashSeed();
    const report = await runCrashTrials({ base: fs.dir, factory: btrfsDriver, trials: 20, seed, bytes: 8 * 1024 * 1024, openKillShare: 0, listOnDisk: btrfsOnDisk(fs.dir) });
    console.log(`btrfs torn-apply trials (seed ${seed}): ${JSON.stringify(report)}`);
    expect(report.trials).toBe(20);
    expect(report.killedDuring.apply ?? 0).toBeGreaterThan(0);
  }, 300_000);
});
