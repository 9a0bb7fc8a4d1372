// branchChanges and diffDirEntries read the rw branch a running container writes into
// (issue 13, "remove the class"): a directory the container swaps (RENAME_EXCHANGE, from @cairnfs/testkit's racer)
// with a symlink to a host directory must never put a host name in the change list. Fails
// on the path-based walk before the fix (host names listed through the symlink). Needs no
// aufs mount: the branch is a plain directory tree.
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { branchChanges, diffDirEntries } from '@cairnfs/aufs';
import { startSwapRacer } from '@cairnfs/testkit';

const ROUNDS = Number(process.env.CAIRN_RACE_ROUNDS) > 0 ? Number(process.env.CAIRN_RACE_ROUNDS) : 30;

let work: string;
beforeEach(() => { work = fs.mkdtempSync(join(tmpdir(), 'cairn-aufs-race-')); });
afterEach(() => { fs.rmSync(work, { recursive: true, force: true }); });

test('a directory of the rw branch swapped with a symlink to a host directory: no host name in any change list', async () => {
  const upper = join(work, 'upper');
  const lower = join(work, 'lower');
  const host = join(work, 'host');
  for (const d of [join(upper, 'd'), join(lower, 'd'), host]) fs.mkdirSync(d, { recursive: true });
  for (let i = 0; i < 32; i++) fs.writeFileSync(join(upper, 'd', `f${i}`), 'A');
  for (let i = 0; i < 32; i++) fs.writeFileSync(join(host, `hostonly${i}`), 'host');
  fs.symlinkSync(host, join(upper, 'evil'));
  const racer = await startSwapRacer({ dir: upper, a: 'd', b: 'evil' });
  const outcomes: Record<string, number> = {};
  let hostNames = 0;
  let swaps = 0;
  try {
    for (let r = 0; r < ROUNDS * 20; r++) {
      try {
        const changes = r % 2 === 0 ? branchChanges(upper, [lower]) : diffDirEntries(upper);
        hostNames += changes.filter((c) => c.path.includes('hostonly')).length;
        outcomes.ok = (outcomes.ok ?? 0) + 1;
      } catch (err) {
        if (String((err as Error).message).includes('hostonly')) hostNames++; // an error naming a host file listed it too
        const code = (err as { code?: string }).code ?? String(err);
        outcomes[code] = (outcomes[code] ?? 0) + 1;
      }
    }
  } finally {
    swaps = (await racer.stop()).swaps;
  }
  console.log(`aufs branch race (parent swap): ${swaps} swaps, walks ${JSON.stringify(outcomes)}`);
  expect(hostNames).toBe(0);
  expect(swaps).toBeGreaterThan(0);
  expect(Object.keys(outcomes).filter((k) => k !== 'ok' && k !== 'ERR_BACKEND_FAILED')).toEqual([]);
}, 60_000);
