// Container-made whiteout names (issue 13): a process in a container may create a file
// called /etc/.wh.passwd. In a layer tar that name is a deletion, so the diff used to
// carry it as the whiteout of /etc/passwd (while changes() reported an added file), and
// commitContainer made an image without /etc/passwd. Now changes() still reports what the
// container did (an added file) and every diff/export refuses the file with
// ERR_UNSAFE_ARCHIVE: no layer can carry it, so none is made.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CairnError, defaultRegistry, openDriver, type StorageDriver } from '@cairnfs/core';
import { vfsDriver } from '@cairnfs/vfs';
import { overlay2Driver } from '@cairnfs/overlay2';
import { LayerStore } from '@cairnfs/image';
import { dirEntry, fileEntry, packedTarOf as tarOf } from '@cairnfs/testkit';
import { drain, saveDir } from './hostile.js';

for (const f of [vfsDriver, overlay2Driver]) defaultRegistry.register(f);

describe.each(['vfs', 'overlay2'])('a container-made .wh. file on %s', (driverName) => {
  let root: string;
  let work: string;
  let driver: StorageDriver;
  let store: LayerStore;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'cairn-whname-'));
    work = await mkdtemp(join(tmpdir(), 'cairn-whname-src-'));
    driver = await openDriver({ root, driver: driverName });
    store = await LayerStore.open(driver);
  });
  afterEach(async () => {
    await driver.cleanup();
    await rm(root, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  for (const name of ['.wh.passwd', '.wh..wh..opq']) {
    test(`${name}: changes() reports an added file, diff and commit refuse it, /etc/passwd stays`, async () => {
      const base = await tarOf([dirEntry('etc'), fileEntry('etc/passwd', 'root:x:0:0::/root:/bin/sh\n')]);
      const [img] = await store.importImage(await saveDir(join(work, 'img'), [base]));
      const c = await store.createContainer(img!.id, 'c1');
      const rootfs = await driver.get(c.mountId);
      try { await writeFile(join(rootfs, 'etc', name), 'made in the container\n'); } finally { await driver.put(c.mountId); }
      const parent = store.layer(c.parent!).cacheId;

      const changes = await driver.changes(c.mountId, parent);
      expect(changes).toContainEqual({ path: `/etc/${name}`, kind: 'add' });
      expect(changes.some((ch) => ch.kind === 'delete')).toBe(false);

      const out = await drain(await driver.diff(c.mountId, parent));
      expect(out.error).toBeInstanceOf(CairnError);
      expect((out.error as CairnError).code).toBe('ERR_UNSAFE_ARCHIVE');
      expect((out.error as CairnError).message).toContain(`etc/${name}`);

      const layers = store.layers().length;
      await expect(store.commitContainer('c1')).rejects.toMatchObject({ code: 'ERR_UNSAFE_ARCHIVE' });
      expect(store.layers().length).toBe(layers);
      expect(store.images().length).toBe(1);
      const again = await driver.get(c.mountId);
      try { expect(await readFile(join(again, 'etc/passwd'), 'utf8')).toMatch(/^root:/); } finally { await driver.put(c.mountId); }
    });
  }
});
