// Pull from a real registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1,
// seeded by skopeo with images these tests make; the result is compared with importing
// the same image. A fault-injecting proxy in front of the registry plays the network and
// the lying registry.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isCairnError } from '@cairnfs/core';
import { chainIds, type PullProgress } from '@cairnfs/image';
import {
  describeBackend, expectSameTree, registryMissing, relay, skopeo, startFaultProxy, startRegistry,
  type FaultProxy, type RegistryFixture,
} from '@cairnfs/testkit';
import { sampleLayers, sha } from '@cairnfs/testkit';
import { freshStore, imageTree, layersFor, seedDockerArchive, seedMultiPlatform, seedOci, storeState } from './registry-fixture.js';

const FAST = { insecure: true, retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 100 } };

async function codeOf(p: Promise<unknown>): Promise<string> {
  try { await p; } catch (err) { return isCairnError(err) ? err.code : `not a CairnError: ${(err as Error).name}: ${(err as Error).message}`; }
  return 'resolved';
}

describeBackend('registry', registryMissing(), () => {
  let reg: RegistryFixture;
  let proxy: FaultProxy;
  let work: string;
  let seeded: { dir: string; tar: string; id: string };
  let layers: Buffer[];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'cairn-pull-'));
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.url);
    layers = await sampleLayers();
    seeded = await seedDockerArchive(reg, work, 'demo/app:1', layers);
  }, 60_000);
  afterAll(async () => {
    await proxy?.stop();
    await reg?.stop();
    await rm(work, { recursive: true, force: true });
  });
  afterEach(() => { proxy.setHandler(null); proxy.log.length = 0; });

  test('a pull of what skopeo pushed gives the image import gives: same id, layers and tree; tagged by the normalised reference', async () => {
    const a = await freshStore();
    const b = await freshStore();
    try {
      const events: PullProgress[] = [];
      const img = await a.store.pull(`${reg.host}/demo/app:1`, { ...FAST, onProgress: (p) => events.push(p) });
      const [imported] = await b.store.importImage(seeded.tar);
      expect(img.id).toBe(seeded.id);
      expect(imported!.id).toBe(seeded.id);
      expect(img.layers).toEqual(chainIds(layers.map(sha)));
      expect(img.tags).toEqual([`${reg.host}/demo/app:1`]);
      expectSameTree(await imageTree(a, img.id), await imageTree(b, imported!.id));
      // progress: every layer downloaded then applied; the byte count ends at the total
      expect(new Set(events.filter((e) => e.layer?.status === 'applied').map((e) => e.layer!.index))).toEqual(new Set([0, 1, 2]));
      expect(events.some((e) => e.layer?.status === 'downloading' && e.layer.bytesDone > 0)).toBe(true);
      const last = events[events.length - 1]!;
      expect(last.layersDone).toBe(3);
      expect(Math.max(...events.map((e) => e.bytesDone))).toBe(last.bytesTotal);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('a second pull downloads no blob (only the manifest is fetched), and is quick', async () => {
    const s = await freshStore();
    try {
      await s.store.pull(`${proxy.host}/demo/app:1`, FAST);
      const blobGets = proxy.log.filter((l) => l.method === 'GET' && l.path.includes('/blobs/'));
      expect(blobGets.length).toBe(layers.length + 1); // the config and each layer, once
      proxy.log.length = 0;
      const t0 = performance.now();
      const again = await s.store.pull(`${proxy.host}/demo/app:1`, FAST);
      const ms = performance.now() - t0;
      expect(again.id).toBe(seeded.id);
      expect(proxy.log.filter((l) => l.path.includes('/blobs/'))).toEqual([]);
      expect(proxy.log.filter((l) => l.path.includes('/manifests/')).length).toBeGreaterThanOrEqual(1);
      expect(ms).toBeLessThan(1000);
    } finally {
      await s.close();
    }
  });

  test('pull by digest: the manifest must hash to it; recorded as name@digest (kept by gc); an unknown digest is ERR_IMAGE_NOT_FOUND', async () => {
    const s = await freshStore();
    try {
      const inspect = JSON.parse(await skopeo(['inspect', ...reg.skopeoFlags('inspect'), `docker://${reg.host}/demo/app:1`])) as { Digest: string };
      const img = await s.store.pull(`${reg.host}/demo/app@${inspect.Digest}`, FAST);
      expect(img.id).toBe(seeded.id);
      expect(img.tags).toEqual([`${reg.host}/demo/app@${inspect.Digest}`]);
      await s.store.gc();
      expect(s.store.image(`${reg.host}/demo/app@${inspect.Digest}`).id).toBe(seeded.id);
      const err = await s.store.pull(`${reg.host}/demo/app@sha256:${'0'.repeat(64)}`, FAST).catch((e: unknown) => e);
      expect(isCairnError(err, 'ERR_IMAGE_NOT_FOUND')).toBe(true);
      expect((err as { status?: number }).status).toBe(404);
    } finally {
      await s.close();
    }
  });

  test('a multi-platform index: the host image by default, another by platform, a missing platform is ERR_IMAGE_NOT_FOUND naming those there', async () => {
    const amd = await layersFor('amd64');
    const arm = await layersFor('arm64v8');
    const ids = await seedMultiPlatform(reg, work, 'multi/app:1', [
      { platform: { os: 'linux', architecture: 'amd64' }, layers: amd },
      { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layers: arm },
    ]);
    const raw = JSON.parse(await skopeo(['inspect', '--raw', ...reg.skopeoFlags('inspect'), `docker://${reg.host}/multi/app:1`])) as { manifests: unknown[] };
    expect(raw.manifests).toHaveLength(2); // skopeo pushed the whole index
    const s = await freshStore();
    try {
      const host = await s.store.pull(`${reg.host}/multi/app:1`, FAST);
      expect(host.id).toBe(process.arch === 'arm64' ? ids['linux/arm64/v8'] : ids['linux/amd64']);
      const other = await s.store.pull(`${reg.host}/multi/app:1`, { ...FAST, platform: 'linux/arm64' });
      expect(other.id).toBe(ids['linux/arm64/v8']);
      expect(other.diffIds).toEqual(arm.map(sha));
      // both images carry the tag? No: a tag names one image; the last pull owns it
      expect(s.store.image(`${reg.host}/multi/app:1`).id).toBe(other.id);
      const err = await s.store.pull(`${reg.host}/multi/app:1`, { ...FAST, platform: 'linux/s390x' }).catch((e: unknown) => e);
      expect(isCairnError(err, 'ERR_IMAGE_NOT_FOUND')).toBe(true);
      expect((err as Error).message).toMatch(/linux\/amd64, linux\/arm64\/v8/);
    } finally {
      await s.close();
    }
  });

  test('a zstd image pushed with its digests preserved pulls to the same image as importing its OCI layout', async () => {
    const zl = await layersFor('zstd-image', 400_000);
    const { dir, id } = await seedOci(reg, work, 'zstd/app:1', zl, 'zstd');
    const raw = JSON.parse(await skopeo(['inspect', '--raw', ...reg.skopeoFlags('inspect'), `docker://${reg.host}/zstd/app:1`])) as { layers: Array<{ mediaType: string }> };
    expect(raw.layers.map((l) => l.mediaType)).toEqual(zl.map(() => 'application/vnd.oci.image.layer.v1.tar+zstd'));
    const a = await freshStore();
    const b = await freshStore();
    try {
      const img = await a.store.pull(`${reg.host}/zstd/app:1`, FAST);
      const [imported] = await b.store.importImage(dir);
      expect(img.id).toBe(id);
      expectSameTree(await imageTree(a, img.id), await imageTree(b, imported!.id));
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('a missing repository or tag is ERR_IMAGE_NOT_FOUND with the registry\'s status and code', async () => {
    const s = await freshStore();
    try {
      for (const ref of [`${reg.host}/no/such:1`, `${reg.host}/demo/app:nope`]) {
        const err = await s.store.pull(ref, FAST).catch((e: unknown) => e);
        expect(isCairnError(err, 'ERR_IMAGE_NOT_FOUND')).toBe(true);
        expect((err as { status?: number }).status).toBe(404);
        expect((err as { registryCode?: string }).registryCode).toBe('MANIFEST_UNKNOWN');
      }
      expect(await storeState(s)).toEqual({ layers: 0, images: 0, driverLayers: [] });
    } finally {
      await s.close();
    }
  });

  test('bad references and options are ERR_INVALID_OPTION before any request', async () => {
    const s = await freshStore();
    try {
      for (const ref of [`${proxy.host}/Upper/case:1`, `${proxy.host}/x:bad tag`, `${proxy.host}/x@sha256:abc`, `${proxy.host}/x@md5:${'a'.repeat(32)}`,
        'a'.repeat(64), `${proxy.host}/${'x'.repeat(300)}`, '', `${proxy.host}/a//b`]) {
        expect(await codeOf(s.store.pull(ref, FAST))).toBe('ERR_INVALID_OPTION');
      }
      expect(await codeOf(s.store.pull(`${proxy.host}/demo/app:1`, { ...FAST, platform: 'linux' }))).toBe('ERR_INVALID_OPTION');
      expect(await codeOf(s.store.pull(`${proxy.host}/demo/app:1`, { mirrors: { [proxy.host]: ['ftp://m'] } }))).toBe('ERR_INVALID_OPTION');
      expect(proxy.log).toEqual([]);
    } finally {
      await s.close();
    }
  });

  test('TLS is required unless insecure: a plain-HTTP registry is ERR_NETWORK naming the TLS failure and the way out', async () => {
    const s = await freshStore();
    try {
      const err = await s.store.pull(`${reg.host}/demo/app:1`, { retry: { attempts: 1 } }).catch((e: unknown) => e);
      expect(isCairnError(err, 'ERR_NETWORK')).toBe(true);
      expect((err as Error).message).toMatch(/insecure/);
    } finally {
      await s.close();
    }
  });

  test('a mirror that lacks the image is skipped; one that has it serves the pull', async () => {
    const mirror = await startRegistry();
    const s = await freshStore();
    try {
      await seedDockerArchive(mirror, work, 'demo/app:1', layers);
      // the upstream named in the reference is the proxy, which fails every request: the mirror serves
      proxy.setHandler((_req, res) => { res.writeHead(500); res.end(); });
      const img = await s.store.pull(`${proxy.host}/demo/app:1`, { ...FAST, mirrors: { [proxy.host]: [`http://${reg.host}/nothing-here-prefix`, mirror.url] } });
      expect(img.id).toBe(seeded.id);
      expect(img.tags).toEqual([`${proxy.host}/demo/app:1`]);
      expect(proxy.log).toEqual([]);
    } finally {
      await s.close();
      await mirror.stop();
    }
  });

  test('on vfs (one layer at a time) the next blob downloads while the layer before it applies: layer 1 has bytes before layer 0 is applied; byte counts not doubled', async () => {
    const res = await fetch(`${reg.url}/v2/demo/app/manifests/1`, { headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
    const blobs = ((await res.json()) as { layers: Array<{ digest: string }> }).layers.map((l) => l.digest);
    // Layer 0's blob is slow to arrive, so its apply ends well after layer 1 could have downloaded.
    proxy.setHandler(async (req, out, forward) => {
      const up = await forward();
      if (req.method === 'GET' && req.url!.endsWith(`/blobs/${blobs[0]}`)) await new Promise((r) => setTimeout(r, 400));
      relay(up, out);
    });
    const v = await freshStore('vfs');
    try {
      const events: PullProgress[] = [];
      const img = await v.store.pull(`${proxy.host}/demo/app:1`, { ...FAST, onProgress: (p) => events.push(p) });
      expect(img.id).toBe(seeded.id);
      const firstBytesOf1 = events.findIndex((e) => e.layer?.index === 1 && e.layer.status === 'downloading' && e.layer.bytesDone > 0);
      const applied0 = events.findIndex((e) => e.layer?.index === 0 && e.layer.status === 'applied');
      expect(firstBytesOf1).toBeGreaterThanOrEqual(0);
      expect(firstBytesOf1).toBeLessThan(applied0);
      const last = events[events.length - 1]!;
      expect(Math.max(...events.map((e) => e.bytesDone))).toBe(last.bytesTotal);
      expect(await readdir(join(v.root, 'image', 'vfs', 'downloads')).catch(() => [])).toEqual([]);
    } finally {
      await v.close();
    }
  });

  test('on vfs (layers applied in order, each a copy of its parent) a pull gives the same image and tree as on overlay2', async () => {
    const v = await freshStore('vfs');
    const o = await freshStore('overlay2');
    try {
      const a = await v.store.pull(`${reg.host}/demo/app:1`, FAST);
      const b = await o.store.pull(`${reg.host}/demo/app:1`, FAST);
      expect(a.id).toBe(seeded.id);
      expect(a.layers).toEqual(b.layers);
      expectSameTree(await imageTree(v, a.id), await imageTree(o, b.id));
    } finally {
      await v.close();
      await o.close();
    }
  });
});
