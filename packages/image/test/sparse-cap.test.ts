// Huge sparse files (issue 13, finding 11): a 10 KB image made a 15 TiB sparse file, which
// every later export, commit and migrate streamed as zeros. Layers' files now count at
// their logical size against maxUncompressedBytes at import, and a commit's diff is
// bounded the same way.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CairnError, defaultRegistry, openDriver, type StorageDriver } from '@cairnfs/core';
import { overlay2Driver } from '@cairnfs/overlay2';
import { DEFAULT_MAX_UNCOMPRESSED_BYTES, LayerStore } from '@cairnfs/image';
import { fileEntry, packedTarOf as tarOf } from '@cairnfs/testkit';
import { cpuMsSince, saveDir } from './hostile.js';

defaultRegistry.register(overlay2Driver);

/** A GNU tar (old GNU or PAX 1.0 sparse) of one hole-only file of `size` bytes: a few KB. */
async function sparseTar(work: string, size: string, posix: boolean): Promise<Buffer> {
  const dir = await mkdtemp(join(work, 'sparse-'));
  execFileSync('truncate', ['-s', size, join(dir, 'huge')]);
  const tar = execFileSync('tar', ['--sparse', ...(posix ? ['--posix'] : []), '-C', dir, '-cf', '-', 'huge']);
  await rm(dir, { recursive: true, force: true });
  return tar;
}

describe('sparse files against maxUncompressedBytes (overlay2)', () => {
  let root: string;
  let work: string;
  let driver: StorageDriver;
  let store: LayerStore;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'cairn-sparse-'));
    work = await mkdtemp(join(tmpdir(), 'cairn-sparse-src-'));
    driver = await openDriver({ root, driver: 'overlay2' });
    store = await LayerStore.open(driver);
  });
  afterEach(async () => {
    await driver.cleanup();
    await rm(root, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test.each([['old GNU', false], ['PAX 1.0', true]])('a %s sparse file of 15 TiB (240x the default cap) in a 10 KB image is refused at once, leaving nothing', async (_f, posix) => {
    const tar = await sparseTar(work, '15T', posix);
    expect(tar.length).toBeLessThan(64 * 1024);
    expect(15 * 2 ** 40).toBeGreaterThan(10 * DEFAULT_MAX_UNCOMPRESSED_BYTES);
    const started = process.cpuUsage();
    const err = await store.importImage(await saveDir(join(work, 'img'), [tar])).catch((e: unknown) => e);
    expect(cpuMsSince(started)).toBeLessThan(2_000);
    expect(err).toBeInstanceOf(CairnError);
    expect((err as CairnError).code).toBe('ERR_INVALID_ARCHIVE');
    // The tar readers' own cap (1 TiB of sparse files per archive) or maxUncompressedBytes, whichever trips first.
    expect((err as CairnError).message).toMatch(/16492674416640 bytes/);
    expect(store.layers()).toEqual([]);
    const left = (await readdir(join(root, 'overlay2'))).filter((n) => n !== 'l' && !n.startsWith('.'));
    expect(left).toEqual([]);
  });

  test('the cap follows maxUncompressedBytes: a 1 GiB sparse file passes at 2 GiB and is refused at 512 MiB', async () => {
    const tar = await sparseTar(work, '1G', true);
    const src = await saveDir(join(work, 'img'), [tar]);
    const err = await store.importImage(src, { maxUncompressedBytes: 512 << 20 }).catch((e: unknown) => e);
    expect((err as CairnError).code).toBe('ERR_INVALID_ARCHIVE');
    expect((err as CairnError).message).toMatch(/sparse file of 1073741824 bytes.*maxUncompressedBytes/);
    const [img] = await store.importImage(src, { maxUncompressedBytes: 2 * 2 ** 30 });
    expect(store.layer(img!.layers[0]!).exact).toBe(true);
  });

  test('commitContainer of a container that made a 1 GiB sparse file stops at maxUncompressedBytes, leaving nothing', async () => {
    const [img] = await store.importImage(await saveDir(join(work, 'base'), [await tarOf([fileEntry('a', 'x')])]));
    const c = await store.createContainer(img!.id, 'c1');
    const rootfs = await driver.get(c.mountId);
    try {
      await mkdir(join(rootfs, 'tmp'));
      execFileSync('truncate', ['-s', '1G', join(rootfs, 'tmp/huge')]);
    } finally { await driver.put(c.mountId); }
    const layersBefore = store.layers().length;
    const started = process.cpuUsage();
    const err = await store.commitContainer('c1', { maxUncompressedBytes: 64 << 20 }).catch((e: unknown) => e);
    expect(cpuMsSince(started)).toBeLessThan(10_000);
    expect(err).toBeInstanceOf(CairnError);
    expect((err as CairnError).code).toBe('ERR_INVALID_ARCHIVE');
    expect((err as CairnError).message).toMatch(/container c1 exceed 67108864 bytes/);
    expect(store.layers().length).toBe(layersBefore);
    expect(store.images().length).toBe(1);
    const tmp = join(root, 'image', 'overlay2', 'layerdb', 'tmp');
    expect((await readdir(tmp)).filter((n) => n.startsWith('commit-'))).toEqual([]);
  });
});
