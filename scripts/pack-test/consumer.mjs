// ESM consumer of the installed tarballs: an application's whole path through the
// umbrella package, on the vfs driver (no mounts): a layer through the driver API, an
// image imported into a LayerStore, a container on it, and a docker-save export.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LayerStore, builtinDrivers, exportImage, isCairnError, migrate, openDriver, packEntries, probe, readTar } from 'cairnfs';
import { hasNewMountApi } from '@cairnfs/sys';

async function bytes(stream) {
  const parts = [];
  for await (const c of stream) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}
const sha = (b) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const file = (name, text) => ({ header: { name, type: 'file', mode: 0o644, size: Buffer.byteLength(text) }, body: Buffer.from(text) });

assert.equal(typeof hasNewMountApi(), 'boolean'); // the addon loaded, from the prebuilt binary
assert.deepEqual(builtinDrivers.map((d) => d.name), ['overlay2', 'btrfs', 'zfs', 'devicemapper', 'aufs', 'vfs']);
assert.equal(typeof migrate, 'function');

const root = await mkdtemp(join(tmpdir(), 'cairn-pack-esm-'));
try {
  const report = await probe({ root });
  assert.equal(report.filter((r) => r.chosen).length, 1);

  const driver = await openDriver({ root, driver: 'vfs' });
  try {
    const layer = await bytes(packEntries([{ header: { name: 'etc', type: 'dir', mode: 0o755 } }, file('etc/os-release', 'ID=packed\n')]));
    const src = join(root, 'img');
    await mkdir(join(src, 'l0'), { recursive: true });
    await writeFile(join(src, 'l0/layer.tar'), layer);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha(layer)] } }));
    await writeFile(join(src, 'config.json'), config);
    await writeFile(join(src, 'manifest.json'), JSON.stringify([{ Config: 'config.json', RepoTags: ['packed:1'], Layers: ['l0/layer.tar'] }]));

    const store = await LayerStore.open(driver);
    const [img] = await store.importImage(src);
    assert.equal(img.id, sha(config));
    const ctr = await store.createContainer('packed:1', 'c1');
    const rootfs = await driver.get(ctr.mountId);
    await writeFile(join(rootfs, 'hello'), 'hi\n');
    await driver.put(ctr.mountId);
    assert.deepEqual((await driver.changes(ctr.mountId, store.layer(ctr.parent).cacheId)).map((c) => `${c.kind} ${c.path}`), ['add /hello']);

    const names = [];
    for await (const item of readTar(exportImage(store, ['packed:1']))) {
      names.push(item.header.name);
      for await (const _ of item.body) { /* drain */ }
    }
    assert.ok(names.includes('manifest.json'), names.join(','));
    assert.ok(names.includes(`blobs/sha256/${sha(layer).slice(7)}`));

    try {
      await store.createContainer('nope:1', 'c2');
      assert.fail('createContainer on a missing image succeeded');
    } catch (err) {
      assert.ok(isCairnError(err) && err.code === 'ERR_IMAGE_NOT_FOUND', String(err));
    }
  } finally {
    await driver.cleanup();
  }
  console.log('esm consumer: ok');
} finally {
  await rm(root, { recursive: true, force: true });
}
