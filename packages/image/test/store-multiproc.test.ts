// Two processes on one layer store at once (issue 16): concurrent imports sharing
// layers, containers created while images are removed, racing tags, racing imports of
// one image, and an import killed mid-way while the other process keeps working. The
// store must stay consistent: no lost tag, no layer removed under a container or an
// import, refcounts right, nothing left behind.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultRegistry, openDriver, type StorageDriver } from '@cairnfs/core';
import { LayerStore, chainIds } from '@cairnfs/image';
import { overlay2Driver } from '@cairnfs/overlay2';
import { vfsDriver } from '@cairnfs/vfs';
import {
  configFor, dirEntry, fileEntry, killChild, nextLine, packedTarOf as tarOf, sampleLayers, sha, spawnTsChild, writeDockerSave, type CrashChild,
} from '@cairnfs/testkit';

for (const f of [vfsDriver, overlay2Driver]) defaultRegistry.register(f);
const CHILD = fileURLToPath(new URL('./store-child.ts', import.meta.url));

class StoreProc {
  private n = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  constructor(readonly child: CrashChild) {
    void (async () => {
      for (let line = await nextLine(child); line !== null; line = await nextLine(child)) {
        const msg = JSON.parse(line) as { id: number; ok?: unknown; err?: { code: string | null; message: string } };
        const w = this.waiting.get(msg.id);
        this.waiting.delete(msg.id);
        if (msg.err) w?.reject(Object.assign(new Error(msg.err.message), { code: msg.err.code }));
        else w?.resolve(msg.ok);
      }
      for (const w of this.waiting.values()) w.reject(Object.assign(new Error('store process exited'), { code: 'EXITED' }));
    })();
  }

  static async start(root: string, driver: string): Promise<StoreProc> {
    const child = spawnTsChild(CHILD, [root, driver]);
    const first = await nextLine(child);
    if (first !== 'ready') throw new Error(`store process did not start: ${String(first)}`);
    return new StoreProc(child);
  }

  ask<T = unknown>(op: string, ...args: string[]): Promise<T> {
    const id = this.n++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.proc.stdin!.write(`${JSON.stringify({ id, op, args })}\n`);
    });
  }
}

/** The driver layers on disk (cache ids are 64 hex digits; vfs keeps them in dir/, overlay2 in its home). */
async function driverLayers(root: string, driver: string): Promise<string[]> {
  return (await readdir(join(root, driver, driver === 'vfs' ? 'dir' : ''))).filter((d) => /^[0-9a-f]{64}$/.test(d)).sort();
}

const codeOf = (p: Promise<unknown>) => p.then(() => null, (e: { code?: string }) => e.code ?? String(e));

describe.each(['vfs', 'overlay2'])('one layer store, two processes, on %s', (driverName) => {
  let root: string;
  let work: string;
  const procs: StoreProc[] = [];
  const start = async () => { const p = await StoreProc.start(root, driverName); procs.push(p); return p; };
  let local: { driver: StorageDriver; store: LayerStore } | null = null;
  const openLocal = async () => {
    const driver = await openDriver({ root, driver: driverName });
    local = { driver, store: await LayerStore.open(driver) };
    return local.store;
  };

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'cairn-image-mp-'));
    work = await mkdtemp(join(tmpdir(), 'cairn-image-mp-src-'));
  });
  afterEach(async () => {
    for (const p of procs.splice(0)) { killChild(p.child); await p.child.exited; }
    if (local) { await local.store.close(); await local.driver.cleanup(); local = null; }
    await rm(root, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test('concurrent imports sharing layers, containers and removals, racing tags and imports: no lost tag, no layer removed under a user, refcounts right', async () => {
    const layers = await sampleLayers();
    const extra = await tarOf([dirEntry('b'), fileEntry('b/only', 'b\n')]);
    const other = [await tarOf([dirEntry('c'), fileEntry('c/1', 'one\n')]), await tarOf([dirEntry('c'), fileEntry('c/2', 'two\n')])];
    await writeDockerSave(join(work, 'a'), layers, 'a:1');
    const bLayers = [...layers.slice(0, 2), extra];
    await writeDockerSave(join(work, 'b'), bLayers, 'b:1', 'none', configFor(bLayers, { created: 'b' }));
    await writeDockerSave(join(work, 'c'), other, 'c:1');
    const [p1, p2] = [await start(), await start()];

    // Two imports at once that share their first two layers.
    await Promise.all([p1.ask('import', join(work, 'a')), p2.ask('import', join(work, 'b'))]);
    const store = await openLocal();
    expect(store.images().flatMap((i) => i.tags).sort()).toEqual(['a:1', 'b:1']);
    const shared = chainIds(layers.map(sha)).slice(0, 2);
    expect(store.layers()).toHaveLength(4);
    expect(store.refcount(shared[1]!)).toBe(2); // a's third layer and b's third layer sit on it

    // A container on b while a is removed: only a's own top layer goes.
    const [, removed] = await Promise.all([p1.ask('create', 'b:1', 'ctr'), p2.ask<{ layersRemoved: string[] }>('rmi', 'a:1')]);
    expect(removed.layersRemoved).toEqual([chainIds(layers.map(sha))[2]]);
    expect(await codeOf(p2.ask('rmi', 'b:1'))).toBe('ERR_LAYER_IN_USE'); // the container, made by the other process
    await p1.ask('rm', 'ctr');
    await p2.ask('rmi', 'b:1');
    await store.refresh();
    expect(store.layers()).toEqual([]);

    // Both import the same image at once: one set of layers, one image, its tag.
    await Promise.all([p1.ask('import', join(work, 'c')), p2.ask('import', join(work, 'c'))]);
    await store.refresh();
    expect(store.layers()).toHaveLength(2);
    expect(store.images().map((i) => i.tags)).toEqual([['c:1']]);
    // No duplicate driver layer: the second import waited on the first's chain locks and used its layers.
    expect(await driverLayers(root, driverName)).toEqual(store.layers().map((l) => l.cacheId).sort());

    // Forty tags from two processes at once: none lost.
    await Promise.all([
      ...Array.from({ length: 20 }, (_, i) => p1.ask('tag', 'c:1', `x:${i}`)),
      ...Array.from({ length: 20 }, (_, i) => p2.ask('tag', 'c:1', `y:${i}`)),
    ]);
    await store.refresh();
    expect(store.image('c:1').tags).toHaveLength(41);
    expect(await p1.ask('exit')).toBeNull();
    expect(await p2.ask('exit')).toBeNull();
  }, 180_000);

  test('an import killed mid-way while another process keeps working: the other goes on, and a gc leaves exactly the finished images', async () => {
    const big = [await tarOf([dirEntry('big'), fileEntry('big/blob', Buffer.alloc(40 << 20, 3))]), ...(await sampleLayers())];
    await writeDockerSave(join(work, 'big'), big, 'big:1');
    const small = [await tarOf([dirEntry('s'), fileEntry('s/1', 'one\n')])];
    await writeDockerSave(join(work, 'small'), small, 'small:1');
    const [victim, other] = [await start(), await start()];
    await other.ask('import', join(work, 'small'));
    const before = (await driverLayers(root, driverName)).length;
    let settled = false;
    const doomed = victim.ask('import', join(work, 'big'));
    doomed.then(() => { settled = true; }, () => { settled = true; });
    // Killed inside the import: as soon as its first driver layer exists (a fixed delay
    // let a fast import finish first).
    while (!settled && (await driverLayers(root, driverName)).length === before) await new Promise((r) => setTimeout(r, 2));
    killChild(victim.child);
    expect(settled).toBe(false);
    await victim.child.exited;
    // The other process goes on, within its lock timeout.
    const t0 = Date.now();
    await other.ask('create', 'small:1', 'ctr');
    await other.ask('tag', 'small:1', 'small:again');
    await other.ask('rm', 'ctr');
    await other.ask('gc');
    expect(Date.now() - t0).toBeLessThan(20_000);
    const store = await openLocal();
    expect(store.images().map((i) => i.tags)).toEqual([['small:1', 'small:again']]);
    expect(store.layers().map((l) => l.chainId)).toEqual(chainIds(small.map(sha)));
    // Nothing of the dead import is left in the driver, its pins or the store's scratch space.
    expect(await driverLayers(root, driverName)).toEqual(store.layers().map((l) => l.cacheId).sort());
    expect(await readdir(join(root, 'image', driverName, 'layerdb', 'tmp'))).toEqual([]);
    expect(await readdir(join(root, 'image', driverName, 'layerdb', 'pins')).catch(() => [])).toEqual([]);
    expect(await other.ask('exit')).toBeNull();
  }, 180_000);
});
