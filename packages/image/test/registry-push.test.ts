// Push to a real registry, cross-checked with skopeo: what cairn pushed inspects as the
// manifest it reported, copies back out, and imports to the same image and tree. Through
// a proxy, the requests themselves are checked: a second push sends no blob, a blob the
// store knows in a sibling repository is mounted, chunked uploads are chunked.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isCairnError } from '@cairnfs/core';
import type { PushProgress } from '@cairnfs/image';
import {
  describeBackend, expectSameTree, registryMissing, relay, skopeo, startFaultProxy, startRegistry,
  type FaultProxy, type RegistryFixture,
} from '@cairnfs/testkit';
import { fileEntry, packedTarOf, sampleLayers, tarDir, writeDockerSave } from '@cairnfs/testkit';
import { freshStore, imageTree, seedDockerArchive } from './registry-fixture.js';

const FAST = { insecure: true, retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 100 } };

interface RawManifest { mediaType: string; config: { digest: string; mediaType: string }; layers: Array<{ mediaType: string; digest: string; size: number }> }

describeBackend('registry', registryMissing(), () => {
  let reg: RegistryFixture;
  let proxy: FaultProxy;
  let work: string;
  let save: string;
  let id: string;
  let src: Awaited<ReturnType<typeof freshStore>>;

  const inspectRaw = async (ref: string) => JSON.parse(await skopeo(['inspect', '--raw', ...reg.skopeoFlags('inspect'), `docker://${reg.host}/${ref}`])) as RawManifest;
  const writes = () => proxy.log.filter((l) => l.method === 'POST' || l.method === 'PATCH' || l.method === 'PUT');

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'cairn-push-'));
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.url);
    const dir = join(work, 'img');
    id = await writeDockerSave(dir, await sampleLayers(), 'demo:1', 'gzip');
    save = join(work, 'img.tar');
    tarDir(dir, save);
    src = await freshStore();
    await src.store.importImage(save);
    // an imported docker-save name is found by its qualified form too (as a pulled one by its short form)
    expect(src.store.image('docker.io/library/demo:1').id).toBe(id);
  }, 60_000);
  afterAll(async () => {
    await src?.close();
    await proxy?.stop();
    await reg?.stop();
    await rm(work, { recursive: true, force: true });
  });
  afterEach(() => { proxy.setHandler(null); proxy.log.length = 0; });

  test('a pushed image inspects as reported, copies back out with skopeo and imports to the same image and tree; a second push sends no blob', async () => {
    const events: PushProgress[] = [];
    const r = await src.store.push('demo:1', `${proxy.host}/pushed/app:1`, { ...FAST, onProgress: (e) => events.push(e) });
    expect(r).toMatchObject({ ref: `${proxy.host}/pushed/app:1`, uploaded: 4, existing: 0, mounted: 0, mediaType: 'application/vnd.docker.distribution.manifest.v2+json' });
    const raw = await inspectRaw('pushed/app:1');
    expect(raw.config.digest).toBe(id);
    expect(raw.layers.map((l) => l.mediaType)).toEqual(Array(3).fill('application/vnd.docker.image.rootfs.diff.tar.gzip'));
    const info = JSON.parse(await skopeo(['inspect', ...reg.skopeoFlags('inspect'), `docker://${reg.host}/pushed/app:1`])) as { Digest: string };
    expect(info.Digest).toBe(r.digest);
    expect(new Set(events.filter((e) => e.layer?.status === 'pushed').map((e) => e.layer!.index))).toEqual(new Set([0, 1, 2]));

    // skopeo takes it out again (verifying every digest) and import gives the same image
    const back = join(work, 'back.tar');
    await skopeo(['copy', '-q', ...reg.skopeoFlags('src'), `docker://${reg.host}/pushed/app:1`, `docker-archive:${back}:back:1`]);
    const other = await freshStore();
    try {
      const [img] = await other.store.importImage(back);
      expect(img!.id).toBe(id);
      expectSameTree(await imageTree(other, img!.id), await imageTree(src, id));
    } finally {
      await other.close();
    }

    proxy.log.length = 0;
    const again = await src.store.push('demo:1', `${proxy.host}/pushed/app:1`, FAST);
    expect(again).toMatchObject({ digest: r.digest, uploaded: 0, existing: 4, mounted: 0 });
    expect(writes()).toEqual([]); // not even the manifest: the tag already names it
  });

  test('a push holds no store lock while it uploads: a tag and an untag finish while its upload is held at the registry; the pushed layers stay', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    let uploading = false;
    proxy.setHandler(async (req, out, forward) => {
      if (req.method === 'PUT' && req.url!.includes('/manifests/') && !uploading) { uploading = true; await held; }
      relay(await forward(), out);
    });
    const pushing = src.store.push('demo:1', `${proxy.host}/pushed/held:1`, FAST);
    try {
      for (let i = 0; i < 200 && !uploading; i++) await new Promise((r) => setTimeout(r, 25));
      expect(uploading).toBe(true);
      const t0 = Date.now();
      await src.store.tag('demo:1', 'during:push');
      expect(src.store.image('during:push').id).toBe(id);
      await src.store.removeImage('during:push');
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(await Promise.race([pushing.then(() => 'done'), new Promise((r) => setTimeout(() => r('running'), 50))])).toBe('running');
    } finally {
      release();
    }
    expect((await pushing).ref).toBe(`${proxy.host}/pushed/held:1`);
    expect(src.store.image('demo:1').id).toBe(id);
  });

  test('zstd on request: an OCI manifest with zstd layers, pulled back by cairn to the same image', async () => {
    const r = await src.store.push('demo:1', `${proxy.host}/pushed/zstd:1`, { ...FAST, compression: 'zstd' });
    expect(r.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    const raw = await inspectRaw('pushed/zstd:1');
    expect(raw.layers.map((l) => l.mediaType)).toEqual(Array(3).fill('application/vnd.oci.image.layer.v1.tar+zstd'));
    const other = await freshStore();
    try {
      const img = await other.store.pull(`${reg.host}/pushed/zstd:1`, FAST);
      expect(img.id).toBe(id);
      expectSameTree(await imageTree(other, img.id), await imageTree(src, id));
    } finally {
      await other.close();
    }
    // and again with zstd: nothing sent (the gzip records are not taken for zstd blobs, the zstd ones are)
    proxy.log.length = 0;
    expect(await src.store.push('demo:1', `${proxy.host}/pushed/zstd:1`, { ...FAST, compression: 'zstd' })).toMatchObject({ uploaded: 0, existing: 4 });
    expect(writes()).toEqual([]);
  });

  test('layers the store knows in a sibling repository are mounted, not uploaded', async () => {
    await src.store.push('demo:1', `${proxy.host}/pushed/app:1`, FAST); // records the blobs there
    proxy.log.length = 0;
    const r = await src.store.push('demo:1', `${proxy.host}/pushed/sibling:1`, FAST);
    expect(r).toMatchObject({ mounted: 3, uploaded: 1 }); // the config is not recorded: uploaded (small)
    const mounts = proxy.log.filter((l) => l.method === 'POST' && l.path.includes('mount='));
    expect(mounts).toHaveLength(3);
    expect(mounts.every((m) => m.path.includes('from=pushed%2Fapp') && m.status === 201)).toBe(true);
    expect(proxy.log.filter((l) => l.method === 'PATCH')).toHaveLength(0);
    await skopeo(['copy', '-q', ...reg.skopeoFlags('src'), `docker://${reg.host}/pushed/sibling:1`, `oci:${join(work, 'sibling-oci')}`]);
  });

  test('a pulled image pushed to another repository of the same registry mounts the blobs it came from', async () => {
    await seedDockerArchive(reg, work, 'seeded/app:1', await sampleLayers());
    const s = await freshStore();
    try {
      await s.store.pull(`${proxy.host}/seeded/app:1`, FAST);
      proxy.log.length = 0;
      const r = await s.store.push(`${proxy.host}/seeded/app:1`, `${proxy.host}/moved/app:1`, FAST);
      expect(r.mounted).toBe(3);
      expect(proxy.log.filter((l) => l.method === 'PATCH')).toHaveLength(0);
    } finally {
      await s.close();
    }
  });

  test('chunked uploads send PATCHes of the chunk size with Content-Range; monolithic sends one PUT per blob; both copy back', async () => {
    for (const upload of ['chunked', 'monolithic'] as const) {
      const s = await freshStore(); // no records: every blob is uploaded
      try {
        await s.store.importImage(save);
        proxy.log.length = 0;
        const r = await s.store.push('demo:1', `${proxy.host}/up/${upload}:1`, { ...FAST, upload, chunkSize: 64 * 1024 });
        expect(r.uploaded).toBe(4);
        const patches = proxy.log.filter((l) => l.method === 'PATCH');
        const raw = await inspectRaw(`up/${upload}:1`);
        if (upload === 'chunked') {
          const expected = raw.layers.reduce((n, l) => n + Math.ceil(l.size / (64 * 1024)), 0);
          expect(patches).toHaveLength(expected);
        } else {
          expect(patches).toHaveLength(0);
          expect(proxy.log.filter((l) => l.method === 'PUT' && l.path.includes('/blobs/uploads/'))).toHaveLength(4);
        }
        await skopeo(['copy', '-q', ...reg.skopeoFlags('src'), `docker://${reg.host}/up/${upload}:1`, `oci:${join(work, `oci-${upload}`)}`]);
      } finally {
        await s.close();
      }
    }
  });

  test('a 500 in the middle of an upload restarts that blob in a new session; the push completes', async () => {
    const s = await freshStore();
    try {
      await s.store.importImage(save);
      let failed = 0;
      proxy.setHandler(async (req, res, forward) => {
        if (req.method === 'PATCH' && failed === 0) {
          failed++;
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end('{"errors":[{"code":"UNKNOWN","message":"storage hiccup"}]}');
          return;
        }
        relay(await forward(), res);
      });
      const r = await s.store.push('demo:1', `${proxy.host}/retry/app:1`, FAST);
      expect(failed).toBe(1);
      expect(r.uploaded).toBe(4);
      await skopeo(['copy', '-q', ...reg.skopeoFlags('src'), `docker://${reg.host}/retry/app:1`, `oci:${join(work, 'oci-retry')}`]);
    } finally {
      await s.close();
    }
  });

  test('push refuses a digest target and unknown images before any request', async () => {
    const codes = [];
    for (const [img, ref] of [['demo:1', `${proxy.host}/x@sha256:${'a'.repeat(64)}`], ['demo:1', `${proxy.host}/UP:1`], ['nope:1', `${proxy.host}/x:1`]]) {
      codes.push(await src.store.push(img!, ref!, FAST).then(() => 'resolved', (e: unknown) => (isCairnError(e) ? e.code : String(e))));
    }
    expect(codes).toEqual(['ERR_INVALID_OPTION', 'ERR_INVALID_OPTION', 'ERR_IMAGE_NOT_FOUND']);
    expect(await src.store.push('demo:1', `${proxy.host}/x:1`, { ...FAST, compression: 'brotli' as 'gzip' }).catch((e: unknown) => (e as { code: string }).code)).toBe('ERR_INVALID_OPTION');
    expect(proxy.log).toEqual([]);
  });
  test('an image with a layer that cannot be rebuilt byte for byte is refused before its layer is uploaded (its manifest would not match the config)', async () => {
    // issue 13: the fallback for an inexact layer is the driver's diff, whose digest is not the config's diff id.
    const dir = join(work, 'inexact');
    const layer = await packedTarOf([fileEntry('x', 'first'), fileEntry('x', 'second')]);
    await writeDockerSave(dir, [layer], 'inexact:1');
    const [img] = await src.store.importImage(dir);
    expect(src.store.layer(img!.layers[0]!).exact).toBe(false);
    const err = await src.store.push('inexact:1', `${proxy.host}/inexact/app:1`, FAST).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_NOT_SUPPORTED' });
    expect((err as Error).message).toMatch(/cannot be pushed.*byte for byte/);
    expect(writes()).toEqual([]); // no upload started, no manifest
  });
});
