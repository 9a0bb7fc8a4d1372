// Mutation fuzzing of applyLayer: ≥ 10,000 mutated layer tars (CAIRN_FUZZ_CASES for
// more; CAIRN_FUZZ_SEED to replay). No crash, no hang, nothing written outside the
// layer, every failure a CairnError. Then a differential run: the native applier and the
// pure-JS path (two implementations of one set of rules) must end every mutated tar the
// same way, with the same error code or the same tree (CAIRN_FUZZ_DIFF_CASES).
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { isCairnError } from '@cairnfs/core';
import { applyLayer } from '@cairnfs/archive';
import { fuzzCase, fuzzSeeds, makeLoopFs, snapshotTree, comparable } from '@cairnfs/testkit';
import type { LoopFs } from '@cairnfs/testkit';

const CASES = Number(process.env.CAIRN_FUZZ_CASES) > 0 ? Number(process.env.CAIRN_FUZZ_CASES) : 10_000;
const SEED = Number.isInteger(Number(process.env.CAIRN_FUZZ_SEED)) && process.env.CAIRN_FUZZ_SEED ? Number(process.env.CAIRN_FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
const DIFF_CASES = Number(process.env.CAIRN_FUZZ_DIFF_CASES) > 0 ? Number(process.env.CAIRN_FUZZ_DIFF_CASES) : 3_000;
const HANG_MS = 5000;

/**
 * A tree without what no tar sets: the times of entries the apply made on its own (a
 * parent directory the tar never listed, an overlay whiteout device) are "now".
 */
function applied(tree: ReturnType<typeof comparable>): ReturnType<typeof comparable> {
  const now = BigInt(Date.now()) * 1_000_000n;
  const window = 600n * 1_000_000_000n;
  for (const e of Object.values(tree)) {
    const t = BigInt(e.mtimeNs.startsWith('(') ? 0 : e.mtimeNs);
    if (t > now - window && t < now + window) e.mtimeNs = '(made by the apply)';
  }
  return tree;
}

/**
 * Whether a name under `dir` is not UTF-8. The native applier keeps such names' bytes (as
 * GNU tar and moby do); the pure-JS path cannot (JS strings), so those trees differ by design.
 */
async function hasNonUtf8Name(dir: string): Promise<boolean> {
  for (const d of await readdir(dir, { encoding: 'buffer', withFileTypes: true })) {
    const name = d.name as unknown as Buffer;
    if (!Buffer.from(name.toString('utf8')).equals(name)) return true;
    if (d.isDirectory() && await hasNonUtf8Name(join(dir, name.toString('utf8')))) return true;
  }
  return false;
}

describe('applyLayer under mutation fuzzing', () => {
  let fs: LoopFs;
  beforeAll(async () => { fs = await makeLoopFs('tmpfs', { sizeMiB: 256 }); });
  afterAll(async () => { await fs?.dispose(); });

  test(`${CASES} mutated tars: only CairnErrors, no hang, canary and surroundings untouched (seed printed)`, async () => {
    const work = await mkdtemp(join(fs.dir, 'fuzz-'));
    const canary = join(work, 'canary');
    await mkdir(join(canary, 'dir'), { recursive: true });
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(canary, 'secret'), 'do not touch');
    const canaryBefore = comparable(await snapshotTree(canary));
    const seeds = fuzzSeeds();
    const outcomes = new Map<string, number>();
    const started = Date.now();
    for (let n = 0; n < CASES; n++) {
      const layer = join(work, 'layer');
      await mkdir(layer);
      const tar = fuzzCase(seeds, SEED, n);
      let timer: NodeJS.Timeout | undefined;
      const hang = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error('hang')), HANG_MS); });
      const result = await Promise.race([applyLayer(layer, Readable.from([tar]), { whiteouts: n % 2 ? 'overlay' : 'delete' }), hang])
        .then(() => 'ok', (e: unknown) => e);
      clearTimeout(timer);
      if (result !== 'ok' && !isCairnError(result)) {
        throw new Error(`fuzz case ${n} (CAIRN_FUZZ_SEED=${SEED}): not a CairnError: ${String((result as Error)?.stack ?? result)}`);
      }
      const key = result === 'ok' ? 'ok' : (result as { code: string }).code;
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      await rm(layer, { recursive: true, force: true });
      if (n % 500 === 0 || n === CASES - 1) {
        const around = (await readdir(work)).sort();
        if (JSON.stringify(around) !== '["canary"]') throw new Error(`fuzz case ${n} (CAIRN_FUZZ_SEED=${SEED}) left ${around.join(', ')} beside the layer`);
        expect(comparable(await snapshotTree(canary))).toEqual(canaryBefore);
        const top = (await readdir(fs.dir)).sort();
        expect(top).toEqual([work.split('/').pop()]);
      }
    }
    console.log(`fuzz seed ${SEED}: ${CASES} cases in ${Date.now() - started} ms: ${JSON.stringify(Object.fromEntries(outcomes))}`);
    expect(outcomes.get('ok') ?? 0).toBeGreaterThan(CASES / 50); // the mutations must not all be trivially rejected
  }, 600_000);

  test(`${DIFF_CASES} mutated tars end the same way natively and in pure JS: the same error code, or the same tree (seed printed)`, async () => {
    const work = await mkdtemp(join(fs.dir, 'diff-'));
    const seeds = fuzzSeeds();
    const outcomes = new Map<string, number>();
    const outcome = (r: unknown) => (r === 'ok' ? 'ok' : isCairnError(r) ? r.code : `not a CairnError: ${String(r)}`);
    for (let n = 0; n < DIFF_CASES; n++) {
      const tar = fuzzCase(seeds, SEED + 1, n);
      const whiteouts = n % 2 ? 'overlay' : 'delete';
      const native = join(work, 'native');
      const js = join(work, 'js');
      await mkdir(native);
      await mkdir(js);
      const a = await applyLayer(native, Readable.from([tar]), { whiteouts, offThread: false }).then(() => 'ok', (e: unknown) => e);
      const b = await applyLayer(js, Readable.from([tar]), { whiteouts, pureJs: true }).then(() => 'ok', (e: unknown) => e);
      const where = `fuzz case ${n} (CAIRN_FUZZ_SEED=${SEED}, differential)`;
      if (outcome(a) !== outcome(b)) throw new Error(`${where}: native ${outcome(a)} (${String((a as Error)?.message ?? a)}) but pure JS ${outcome(b)} (${String((b as Error)?.message ?? b)})`);
      if (a === 'ok' && await hasNonUtf8Name(native)) {
        outcomes.set('ok, non-UTF-8 names', (outcomes.get('ok, non-UTF-8 names') ?? 0) + 1);
      } else if (a === 'ok') {
        const [ta, tb] = [applied(comparable(await snapshotTree(native))), applied(comparable(await snapshotTree(js)))];
        if (JSON.stringify(ta) !== JSON.stringify(tb)) expect({ where, tree: ta }).toEqual({ where, tree: tb });
      }
      outcomes.set(outcome(a), (outcomes.get(outcome(a)) ?? 0) + 1);
      await rm(native, { recursive: true, force: true });
      await rm(js, { recursive: true, force: true });
    }
    console.log(`differential fuzz seed ${SEED}: ${DIFF_CASES} cases: ${JSON.stringify(Object.fromEntries(outcomes))}`);
    expect(outcomes.get('ok') ?? 0).toBeGreaterThan(DIFF_CASES / 50);
  }, 600_000);
});
