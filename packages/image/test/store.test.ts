import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { closeSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDriver, defaultRegistry, isValidId, type StorageDriver } from '@cairnfs/core';
import { readTar, writeExportTo } from '@cairnfs/archive';
import { vfsDriver } from '@cairnfs/vfs';
import { overlay2Driver } from '@cairnfs/overlay2';
import { LayerStore, chainIds, exportImage } from '@cairnfs/image';
import { configFor, sampleLayers, sha, tarDir, writeDockerSave, writeOciLayout, type Compress } from '@cairnfs/testkit';

for (const f of [vfsDriver, overlay2Driver]) defaultRegistry.register(f);

async function collect(r: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

async function readTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string, rel: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = `${rel}/${e.name}`;
      if (e.isDirectory()) { out[p] = 'dir'; await walk(join(d, e.name), p); }
      else if (e.isSymbolicLink()) out[p] = 'link';
      else out[p] = (await readFile(join(d, e.name))).length + ':' + sha(await readFile(join(d, e.name))).slice(7, 19);
    }
  };
  await walk(root, '');
  return out;
}

describe.each(['vfs', 'overlay2'])('layer store on %s', (driverName) => {
  let root: string;
  let work: string;
  let driver: StorageDriver;
  let store: LayerStore;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'cairn-image-'));
    work = await mkdtemp(join(tmpdir(), 'cairn-image-src-'));
    driver = await openDriver({ root, driver: driverName });
    store = await LayerStore.open(driver);
  });
  afterEach(async () => {
    delete process.env.CAIRN_ZSTD_JS;
    delete process.env.CAIRN_DECODE_IN_JS;
    await driver.cleanup();
    await rm(root, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test.each<[string, Compress]>([['docker-save tarball', 'none'], ['gzip OCI archive', 'gzip'], ['zstd OCI layout dir', 'zstd'],
    ['zstd OCI layout dir through the JS decoder (CAIRN_ZSTD_JS=1: no libzstd)', 'zstd'],
    // By default a compressed blob that is a range of a file is decoded in the applier's
    // pass; these take the stream path, which registry pulls and other sources use.
    ['gzip OCI archive decoded by a stream (CAIRN_DECODE_IN_JS=1)', 'gzip'],
    ['zstd OCI layout dir decoded by a stream (CAIRN_DECODE_IN_JS=1)', 'zstd']])(
    'imports a %s, builds the merged tree and exports every layer byte for byte', async (kind, how) => {
      if (kind.includes('CAIRN_ZSTD_JS')) process.env.CAIRN_ZSTD_JS = '1'; // unset by afterEach
      if (kind.includes('CAIRN_DECODE_IN_JS')) process.env.CAIRN_DECODE_IN_JS = '1';
      const layers = await sampleLayers();
      const dir = join(work, 'img');
      let src = dir;
      if (kind.startsWith('docker')) { await writeDockerSave(dir, layers, 'demo:1', how); src = join(work, 'img.tar'); tarDir(dir, src); }
      else if (kind.includes('archive')) { await writeOciLayout(dir, layers, 'demo:1', how); src = join(work, 'img.tar'); tarDir(dir, src); }
      else await writeOciLayout(dir, layers, 'demo:1', how);
      const events: number[] = [];
      const [img] = await store.importImage(src, { onProgress: (p) => events.push(p.layersDone) });
      expect(img!.tags).toEqual(['demo:1']);
      expect(img!.layers).toEqual(chainIds(layers.map(sha)));
      expect(events[events.length - 1]).toBe(3);
      const c = await store.createContainer('demo:1', 'c1');
      const rootfs = await driver.get(c.mountId);
      try {
        const tree = await readTree(rootfs);
        expect(Object.keys(tree).sort()).toEqual(['/app', '/app/data.json', '/bin', '/bin/big', '/etc', '/etc/app.conf', '/etc/link', '/etc/os-release']);
      } finally { await driver.put(c.mountId); }
      for (const [i, chain] of img!.layers.entries()) {
        const out = await collect(store.exportLayer(chain));
        expect(sha(out)).toBe(sha(layers[i]!));
      }
    });

  test('a second import of the same layers is free and a shared base is stored once', async () => {
    const layers = await sampleLayers();
    await writeDockerSave(join(work, 'a'), layers, 'a:1');
    await writeDockerSave(join(work, 'b'), layers.slice(0, 2), 'b:1', 'none', configFor(layers.slice(0, 2), { created: 'b' }));
    await store.importImage(join(work, 'a'));
    const bytes: number[] = [];
    await store.importImage(join(work, 'a'), { tag: 'a:again', onProgress: (p) => bytes.push(p.bytesTotal) });
    expect(bytes.every((b) => b === 0)).toBe(true);
    await store.importImage(join(work, 'b'));
    expect(store.layers()).toHaveLength(3);
    expect(store.images()).toHaveLength(2);
    expect(store.image('a:again').tags).toEqual(['a:1', 'a:again']);
    expect(store.refcount(store.image('b:1').layers[1]!)).toBe(2); // child layer of a + image b
  });

  test('parallel and sequential import of the same image give identical trees for every layer', async () => {
    const layers = await sampleLayers();
    await writeDockerSave(join(work, 'p'), layers, 'p:1');
    const [seq] = await store.importImage(join(work, 'p'), { parallel: false });
    const seqTrees: Array<Record<string, string>> = [];
    for (const chain of seq!.layers) {
      const id = store.layer(chain).cacheId;
      seqTrees.push(await readTree(await driver.get(id)));
      await driver.put(id);
    }
    const root2 = await mkdtemp(join(tmpdir(), 'cairn-image-par-'));
    const d2 = await openDriver({ root: root2, driver: driverName });
    try {
      const s2 = await LayerStore.open(d2);
      const [par] = await s2.importImage(join(work, 'p'), { parallel: true, concurrency: 3 });
      expect(par!.layers).toEqual(seq!.layers);
      for (const [i, chain] of par!.layers.entries()) {
        const id = s2.layer(chain).cacheId;
        expect(await readTree(await d2.get(id))).toEqual(seqTrees[i]);
        await d2.put(id);
      }
    } finally {
      await d2.cleanup();
      await rm(root2, { recursive: true, force: true });
    }
  });

  test('a layer whose content does not match its diff id fails the import and leaves nothing behind', async () => {
    const layers = await sampleLayers();
    const config = configFor([layers[0]!, layers[1]!, layers[0]!]); // claims the wrong third layer
    await writeDockerSave(join(work, 'bad'), layers, 'bad:1', 'gzip', config);
    await expect(store.importImage(join(work, 'bad'))).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE', message: expect.stringMatching(/diff id/) });
    expect(store.layers()).toHaveLength(0);
    expect(store.images()).toHaveLength(0);
    const home = await readdir(driver.home).catch(() => []);
    const reopened = await LayerStore.open(driver);
    expect(reopened.layers()).toHaveLength(0);
    // No driver layer survives: the only entries left in the home are the driver's own bookkeeping.
    for (const name of home.filter((n) => isValidId(n) && n !== 'l')) expect(await driver.exists(name)).toBe(false);
  });

  test('releasing the last reference removes the layers, and a container pins its image', async () => {
    const layers = await sampleLayers();
    await writeDockerSave(join(work, 'a'), layers, 'a:1');
    const [img] = await store.importImage(join(work, 'a'));
    await store.createContainer('a:1', 'web');
    const cacheIds = img!.layers.map((l) => store.layer(l).cacheId);
    for (const id of cacheIds) expect(await driver.exists(id)).toBe(true);
    await expect(store.removeImage('a:1')).rejects.toMatchObject({ code: 'ERR_LAYER_IN_USE' });
    await store.removeContainer('web');
    const r = await store.removeImage('a:1');
    expect(r.layersRemoved).toEqual([...img!.layers].reverse());
    for (const id of cacheIds) expect(await driver.exists(id)).toBe(false);
    const reopened = await LayerStore.open(driver);
    expect(reopened.layers()).toHaveLength(0);
    expect(reopened.images()).toHaveLength(0);
  });

  test('commitContainer turns a container\'s changes into a new image layer whose tree equals the container', async () => {
    await writeDockerSave(join(work, 'a'), await sampleLayers(), 'a:1');
    const [img] = await store.importImage(join(work, 'a'));
    const c = await store.createContainer('a:1', 'box');
    const rootfs = await driver.get(c.mountId);
    await writeFile(join(rootfs, 'etc/added'), 'new\n');
    await rm(join(rootfs, 'etc/app.conf'));
    const containerTree = await readTree(rootfs);
    await driver.put(c.mountId);

    const committed = await store.commitContainer('box', { tag: 'a:2', comment: 'test commit' });
    expect(committed.tags).toEqual(['a:2']);
    expect(committed.layers.slice(0, -1)).toEqual(img!.layers);
    expect(committed.diffIds).toHaveLength(img!.diffIds.length + 1);
    const config = JSON.parse((await store.imageConfig('a:2')).toString());
    expect(config.rootfs.diff_ids).toEqual(committed.diffIds);
    expect(config.history.at(-1)).toMatchObject({ created_by: 'cairn commit box', comment: 'test commit' });

    // The new top layer seen through a fresh container is exactly what the old container showed.
    const c2 = await store.createContainer('a:2', 'box2');
    const root2 = await driver.get(c2.mountId);
    try {
      expect(await readTree(root2)).toEqual(containerTree);
    } finally {
      await driver.put(c2.mountId);
    }
    // The committed layer exports byte for byte as the diff it was made from (its diff id).
    expect(sha(await collect(store.exportLayer(committed.layers.at(-1)!)))).toBe(committed.diffIds.at(-1));
  });

  test('exportImage writes a docker-save tarball that imports again to the same image id and layers', async () => {
    const layers = await sampleLayers();
    await writeDockerSave(join(work, 'a'), layers, 'a:1');
    const [img] = await store.importImage(join(work, 'a'));
    const out = join(work, 'out.tar');
    await writeFile(out, await collect(exportImage(store, ['a:1'])));
    const names: string[] = [];
    for await (const item of readTar((await import('node:fs')).createReadStream(out))) names.push(item.header.name);
    expect(names).toEqual(expect.arrayContaining(['manifest.json', 'index.json', 'oci-layout', ...layers.map((l) => `blobs/sha256/${sha(l).slice(7)}`)]));
    const root2 = await mkdtemp(join(tmpdir(), 'cairn-image-2-'));
    const d2 = await openDriver({ root: root2, driver: 'vfs' });
    try {
      const s2 = await LayerStore.open(d2);
      const [again] = await s2.importImage(out);
      expect(again!.id).toBe(img!.id);
      expect(again!.tags).toEqual(['a:1']);
    } finally {
      await d2.cleanup();
      await rm(root2, { recursive: true, force: true });
    }
  });

  test('exportImage of two images sharing their base layer writes each layer blob once, each under its own digest, the Readable and writeExportTo alike, and both images import again', async () => {
    const layers = await sampleLayers();
    const extra = join(work, 'extra');
    await (await import('node:fs/promises')).mkdir(extra);
    await writeFile(join(extra, 'only-in-b'), 'b\n');
    tarDir(extra, join(work, 'extra.tar'));
    await writeDockerSave(join(work, 'a'), layers, 'a:1');
    await writeDockerSave(join(work, 'b'), [layers[0]!, await readFile(join(work, 'extra.tar'))], 'b:1');
    const [imgA] = await store.importImage(join(work, 'a'));
    const [imgB] = await store.importImage(join(work, 'b'));
    const whole = await collect(exportImage(store, ['a:1', 'b:1']));
    const out = join(work, 'two.tar');
    const fd = openSync(out, 'w');
    try {
      await writeExportTo(exportImage(store, ['a:1', 'b:1']), fd);
    } finally {
      closeSync(fd);
    }
    expect((await readFile(out)).equals(whole)).toBe(true);
    const blobs: string[] = [];
    for await (const item of readTar((async function* () { yield whole; })())) {
      if (!item.header.name.startsWith('blobs/sha256/')) continue;
      const body = Buffer.concat(await (async () => { const parts: Buffer[] = []; for await (const c of item.body) parts.push(c as Buffer); return parts; })());
      expect(sha(body)).toBe(`sha256:${item.header.name.slice('blobs/sha256/'.length)}`);
      blobs.push(item.header.name);
    }
    const layerBlobs = [...new Set([...imgA!.diffIds, ...imgB!.diffIds])].map((d) => `blobs/sha256/${d.slice(7)}`);
    expect(blobs.filter((b) => layerBlobs.includes(b))).toEqual(layerBlobs);
    const root2 = await mkdtemp(join(tmpdir(), 'cairn-image-3-'));
    const d2 = await openDriver({ root: root2, driver: 'vfs' });
    try {
      const again = await (await LayerStore.open(d2)).importImage(out);
      expect(again.map((i) => i.id).sort()).toEqual([imgA!.id, imgB!.id].sort());
    } finally {
      await d2.cleanup();
      await rm(root2, { recursive: true, force: true });
    }
  });

  test('exportImage pins its layers while it streams (another store instance counts the pin), mounts none of them, and writeExportTo writes the same bytes', async () => {
    // A 3 MiB file in the first layer: the export spans several chunks, so after the first
    // the export is still running.
    const big = join(work, 'big');
    await (await import('node:fs/promises')).mkdir(big);
    await writeFile(join(big, 'blob'), Buffer.alloc(3 << 20, 7));
    tarDir(big, join(work, 'big.tar'));
    const layers = [await readFile(join(work, 'big.tar')), ...await sampleLayers()];
    await writeDockerSave(join(work, 'a'), layers, 'a:1');
    const [img] = await store.importImage(join(work, 'a'));
    const mountsUnder = async () => (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(driver.home)).length;
    const before = img!.layers.map((c) => store.refcount(c));
    const mountsBefore = await mountsUnder();
    const whole = await collect(exportImage(store, ['a:1']));

    const stream = exportImage(store, ['a:1']);
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next();
    expect(first.done).toBe(false);
    const other = await LayerStore.open(driver);
    try {
      expect(img!.layers.map((c) => other.refcount(c))).toEqual(before.map((n) => n + 1));
      expect(await mountsUnder()).toBe(mountsBefore);
      const rest = [first.value as Buffer];
      for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value as Buffer);
      expect(Buffer.concat(rest).equals(whole)).toBe(true);
      await other.refresh();
      expect(img!.layers.map((c) => other.refcount(c))).toEqual(before);
    } finally {
      await other.close();
    }

    const out = join(work, 'direct.tar');
    const fd = openSync(out, 'w');
    try {
      await writeExportTo(exportImage(store, ['a:1']), fd);
    } finally {
      closeSync(fd);
    }
    expect((await readFile(out)).equals(whole)).toBe(true);
  });
});
