// Pull from a real registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1,
// seeded by skopeo with images these tests make; the result is compared with importing
// the same image. A fault-injecting proxy in front of the registry plays the network and
// the lying registry.
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isCairnError } from '@cairnfs/core';
import { chainIds, type PullProgress } from '@cairnfs/image';
import {
  describeBackend, expectSameTree, registryMissing, relay, skopeo, startFaultProxy, startRegistry,
  type FaultProxy, type RegistryFixture,
} from '@cairnfs/testkit';
import { sampleLayers, sha } from './fixture.js';
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
});
