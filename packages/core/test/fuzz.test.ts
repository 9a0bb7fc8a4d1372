// Mutation fuzzing of applyLayer: ≥ 10,000 mutated layer tars (CAIRN_FUZZ_CASES for
// more; CAIRN_FUZZ_SEED to replay). No crash, no hang, nothing written outside the
// layer, every failure a CairnError.
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { applyLayer, isCairnError } from '@cairn/core';
import { fuzzCase, fuzzSeeds, makeLoopFs, snapshotTree, comparable } from '@cairn/testkit';
import type { LoopFs } from '@cairn/testkit';

const CASES = Number(process.env.CAIRN_FUZZ_CASES) > 0 ? Number(process.env.CAIRN_FUZZ_CASES) : 10_000;
const SEED = Number.isInteger(Number(process.env.CAIRN_FUZZ_SEED)) && process.env.CAIRN_FUZZ_SEED ? Number(process.env.CAIRN_FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
const HANG_MS = 5000;

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
});
