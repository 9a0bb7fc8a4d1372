// branchChanges and diffDirEntries read the rw branch a running container writes into
// (issue 13, "remove the class"): a directory the container swaps (RENAME_EXCHANGE, from @cairnfs/testkit's racer)
// with a symlink to a host directory must never put a host name in the change list. Fails
// on the path-based walk before the fix (host names listed through the symlink). Needs no
// aufs mount: the branch is a plain directory tree.
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { branchChanges, diffDirEntries } from '@cairnfs/aufs';
import { plantUpperWithHostLink, raceListing } from '@cairnfs/testkit';

const ROUNDS = Number(process.env.CAIRN_RACE_ROUNDS) > 0 ? Number(process.env.CAIRN_RACE_ROUNDS) : 30;

let work: string;
beforeEach(() => { work = fs.mkdtempSync(join(tmpdir(), 'cairn-aufs-race-')); });
afterEach(() => { fs.rmSync(work, { recursive: true, force: true }); });

test('a directory of the rw branch swapped with a symlink to a host directory: no host name in any change list', async () => {
  const { upper, lower } = plantUpperWithHostLink(work);
  let r = 0;
  const { hostNames, swaps, outcomes } = await raceListing({
    dir: upper, a: 'd', b: 'evil', rounds: ROUNDS * 20,
    walk: () => (r++ % 2 === 0 ? branchChanges(upper, [lower]) : diffDirEntries(upper)),
  });
  console.log(`aufs branch race (parent swap): ${swaps} swaps, walks ${JSON.stringify(outcomes)}`);
  expect(hostNames).toBe(0);
  expect(swaps).toBeGreaterThan(0);
  expect(Object.keys(outcomes).filter((k) => k !== 'ok' && k !== 'ERR_BACKEND_FAILED')).toEqual([]);
}, 60_000);
