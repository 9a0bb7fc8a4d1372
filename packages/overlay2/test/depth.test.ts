import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '@cairnfs/core';
import * as sys from '@cairnfs/sys';
import { describeBackend, testWhen } from '@cairnfs/testkit';
import type { Overlay2Driver } from '@cairnfs/overlay2';
import { makeHome, overlayMissing, overlayMountsUnder } from './helpers.js';
import type { Home } from './helpers.js';

const missing = await overlayMissing();

async function errorOf(p: Promise<unknown>): Promise<CairnError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CairnError) return err;
    throw err;
  }
  throw new Error('expected a CairnError, got success');
}

/** base + `n` children, each adding file-<i> straight into its diff dir (what applyDiff does). */
async function chain(d: Overlay2Driver, n: number): Promise<void> {
  for (let i = 0; i <= n; i++) {
    await d.createReadWrite(`L${i}`, i === 0 ? null : `L${i - 1}`);
    await writeFile(join(d.layout.diffDir(`L${i}`), `file-${i}`), String(i));
  }
}

describeBackend('overlayfs', missing, () => {
  let h: Home;
  afterEach(async () => {
    await h.dispose();
  });

  test('moby depth: a layer on 128 lowers mounts and shows every layer; one more is ERR_MAX_DEPTH naming the limit and option', async () => {
    h = await makeHome();
    const d = await h.open();
    await chain(d, 128);
    expect((await d.mountSpecFor('L128'))!.method).toBe('mount');
    const root = await d.get('L128');
    try {
      expect(await readdir(root)).toHaveLength(129);
      expect(await readFile(join(root, 'file-0'), 'utf8')).toBe('0');
    } finally {
      await d.put('L128');
    }
    const err = await errorOf(d.createReadWrite('L129', 'L128'));
    expect(err.code).toBe('ERR_MAX_DEPTH');
    expect(err.message).toMatch(/limit of 128/);
    expect(err.message).toMatch(/overlay2\.maxDepth/);
    expect(await d.exists('L129')).toBe(false);
  });

  test('overlay2.maxDepth outside 1..500 is ERR_INVALID_OPTION', async () => {
    h = await makeHome();
    expect((await errorOf(h.open({ 'overlay2.maxDepth': '501' }))).code).toBe('ERR_INVALID_OPTION');
    expect((await errorOf(h.open({ 'overlay2.maxDepth': 'lots' }))).code).toBe('ERR_INVALID_OPTION');
    expect((await errorOf(h.open({ 'overlay2.bogus': '1' }))).code).toBe('ERR_INVALID_OPTION');
  });

  const noNewMountApi = sys.hasNewMountApi() ? null : "the new mount API (fsopen/fsconfig, Linux 5.2+): overlay's lowerdir+ takes 500 lowers only through it";
  testWhen(noNewMountApi, 'overlay2.maxDepth=500: a layer on 500 lowers mounts with lowerdir+ and shows all 501 layers; 501 lowers is ERR_MAX_DEPTH', async () => {
    h = await makeHome();
    const d = await h.open({ 'overlay2.maxDepth': '500' });
    await chain(d, 500);
    const spec = await d.mountSpecFor('L500');
    expect(spec!.method).toBe('fsmount');
    expect(spec!.options.filter(([k]) => k === 'lowerdir+')).toHaveLength(500);
    const root = await d.get('L500');
    try {
      const names = await readdir(root);
      expect(names).toHaveLength(501);
      expect(await readFile(join(root, 'file-0'), 'utf8')).toBe('0');
      expect(await readFile(join(root, 'file-250'), 'utf8')).toBe('250');
      await writeFile(join(root, 'top'), 'upper');
      expect(await readFile(join(d.layout.diffDir('L500'), 'top'), 'utf8')).toBe('upper');
      expect(await overlayMountsUnder(h.root)).toHaveLength(1);
    } finally {
      await d.put('L500');
    }
    expect(await overlayMountsUnder(h.root)).toHaveLength(0);
    const err = await errorOf(d.createReadWrite('L501', 'L500'));
    expect(err.code).toBe('ERR_MAX_DEPTH');
    expect(err.message).toMatch(/limit of 500/);
  }, 300_000);
});
