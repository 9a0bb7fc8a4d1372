// A catalogue of hostile and broken layer archives. Each must be refused with the right
// code, and a canary directory beside the target must stay byte-for-byte untouched.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { applyLayer } from '@cairnfs/archive';
import { notRoot, testWhen } from '@cairnfs/testkit';
import { chunked, fingerprint, removeDir, tempDir } from './helpers.js';
import { cases, dir, file, sym, tar } from './hostile-cases.js';

// scripts/fuzz-corpus.mjs runs this file with CAIRN_FUZZ_CORPUS set: each case's tar
// becomes a seed of the addon's libFuzzer corpus (packages/sys/fuzz/corpus). Cases over
// 1 MiB (the memory bomb) are left out: the fuzzer's inputs are capped far below.
const corpusDir = process.env['CAIRN_FUZZ_CORPUS'];
if (corpusDir) {
  fs.mkdirSync(corpusDir, { recursive: true });
  cases.forEach((c, i) => {
    const bytes = c.tar({ canary: '/tmp/canary', layer: '/tmp/layer' });
    const slug = c.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60);
    if (bytes.length <= 1 << 20) fs.writeFileSync(path.join(corpusDir, `${String(i).padStart(3, '0')}-${slug}.tar`), bytes);
  });
}

describe('hostile archives', () => {
  let work: string;
  let canary: string;
  let layer: string;
  beforeEach(() => {
    work = tempDir('hostile');
    canary = path.join(work, 'canary');
    layer = path.join(work, 'layer');
    fs.mkdirSync(path.join(canary, 'dir'), { recursive: true });
    fs.writeFileSync(path.join(canary, 'secret'), 'do not touch');
    fs.writeFileSync(path.join(canary, 'dir/inner'), 'nor this');
    fs.mkdirSync(layer);
  });
  afterEach(() => removeDir(work));

  test('the catalogue has at least 40 refusals and 12 odd-but-legal layers', () => {
    expect(cases.filter((c) => c.code !== 'ok').length).toBeGreaterThanOrEqual(40);
    expect(cases.filter((c) => c.code === 'ok').length).toBeGreaterThanOrEqual(12);
  });

  for (const c of cases) {
    testWhen(c.rootOnly ? notRoot : null, `${c.code === 'ok' ? 'applies safely' : `refuses with ${c.code}`}: ${c.name}`, async () => {
      const ctx = { canary, layer };
      c.prepare?.(ctx);
      const before = fingerprint(canary);
      const data = c.tar(ctx);
      const run = applyLayer(layer, chunked(data, 700), c.opts);
      if (c.code === 'ok') {
        await run;
      } else {
        const err = await run.then(() => undefined, (e: unknown) => e);
        expect(err).toMatchObject({ name: 'CairnError', code: c.code });
        expect((err as Error).message.length).toBeGreaterThan(20);
      }
      expect(fingerprint(canary)).toBe(before);
      expect(fs.readdirSync(work).sort()).toEqual(['canary', 'layer']);
      c.after?.(ctx);
    });
  }

  test('an unsafe entry is reported by name', async () => {
    const err = await applyLayer(layer, chunked(tar(dir('ok'), sym('esc', '../canary'), file('esc/secret')), 512)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_UNSAFE_ARCHIVE', subject: 'esc/secret' });
    expect((err as Error).message).toContain('"esc"');
  });
});
