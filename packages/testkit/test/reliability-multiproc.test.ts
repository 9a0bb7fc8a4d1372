// One store, many processes (issue 16): two and three real processes on one root, each
// making, applying, mounting and removing its own layers and sharing one; and a process
// killed with SIGKILL while it holds mounts and locks, mid-apply, with the others going on.
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { flockHolders, readMountInfo } from '@cairnfs/core';
import type { DriverFactory, StorageDriver } from '@cairnfs/core';
import { overlay2Driver } from '@cairnfs/overlay2';
import { vfsDriver } from '@cairnfs/vfs';
import { describeBackend, RemoteDriver, RemoteError } from '@cairnfs/testkit';
import { overlayMissing } from './reliability-helpers.js';

type Counted = StorageDriver & { mountCount(id: string): Promise<number> };

/** How many mounts sit exactly at `path` right now (the kernel's view). */
async function mountsAt(path: string): Promise<number> {
  return (await readMountInfo()).filter((m) => m.mountPoint === path).length;
}

async function mountsUnder(home: string): Promise<string[]> {
  return (await readMountInfo()).map((m) => m.mountPoint).filter((p) => p.startsWith(`${home}/`));
}

async function code(p: Promise<unknown>): Promise<string | null> {
  return p.then(() => null, (err: unknown) => (err instanceof RemoteError || (err as { code?: string }).code ? (err as { code: string }).code : String(err)));
}

for (const [factory, missing] of [[vfsDriver, process.getuid?.() === 0 ? null : 'needs root'], [overlay2Driver, overlayMissing()]] as Array<[DriverFactory, string | null]>) {
  describeBackend(factory.name === 'vfs' ? 'root' : 'overlay', missing, () => {
    describe(`${factory.name}: several processes on one root`, () => {
      let root: string;
      const remotes: RemoteDriver[] = [];
      const local: StorageDriver[] = [];
      const home = () => join(root, factory.name);
      const start = async (lockTimeoutMs = 10_000) => {
        const r = await RemoteDriver.start(factory.name, root, { lockTimeoutMs });
        remotes.push(r);
        return r;
      };
      const openHere = async () => {
        const d = await factory.open({ root, home: home(), options: {}, lockTimeoutMs: 10_000 }) as Counted;
        local.push(d);
        return d;
      };
      beforeEach(async () => { root = await mkdtemp(join(tmpdir(), `cairn-mp-${factory.name}-`)); });
      afterEach(async () => {
        for (const r of remotes.splice(0)) { r.kill(); await r.exited; }
        for (const d of local.splice(0)) await d.cleanup().catch(() => undefined);
        // Whatever a killed process left: a fresh open drops dead holds, a cleanup the rest.
        await (await factory.open({ root, home: home(), options: {}, lockTimeoutMs: 10_000 })).cleanup();
        expect(await mountsUnder(home())).toEqual([]);
        await rm(root, { recursive: true, force: true });
      });

      test('two processes: each sees what the other made, a shared layer is one mount with exact hold counts, the last put of either unmounts', async () => {
        const a = await start();
        const b = await start();
        await a.call('create', 'shared', null);
        await a.apply('shared', 1, 8192);
        expect(await b.call('exists', 'shared')).toBe(true);
        await a.call('create', 'a1', 'shared');
        await a.apply('a1', 2, 4096, true);
        await b.call('create', 'b1', 'shared');
        await b.apply('b1', 3, 4096, true);
        expect(await a.call('exists', 'b1')).toBe(true);

        const path = await a.call<string>('get', 'shared');
        expect(await b.call('get', 'shared')).toBe(path);
        await a.call('get', 'shared');
        expect(await mountsAt(path)).toBe(1);
        expect(await a.call('mountCount', 'shared')).toBe(3);
        expect(await b.call('mountCount', 'shared')).toBe(3);
        const observer = await openHere();
        expect(await (observer as Counted).mountCount('shared')).toBe(3);
        // Own layers mounted by their makers, seen by the other.
        const pa = await a.call<string>('get', 'a1');
        const pb = await b.call<string>('get', 'b1');
        expect(await mountsAt(pa)).toBe(1);
        expect(await mountsAt(pb)).toBe(1);
        expect((await readdir(join(pb, 'L-b1'))).length).toBeGreaterThan(3);
        expect((await readdir(join(pb, 'L-shared'))).length).toBeGreaterThan(3);
        expect(await code(b.call('remove', 'a1'))).toBe('ERR_LAYER_IN_USE'); // a holds it
        expect(await code(b.call('put', 'a1'))).toBe('ERR_NOT_MOUNTED'); // b holds no get of it

        await a.call('put', 'shared');
        await a.call('put', 'shared');
        expect(await mountsAt(path)).toBe(1); // b still holds it
        expect(await observer.exists('a1')).toBe(true);
        await b.call('put', 'shared');
        expect(await mountsAt(path)).toBe(0);
        await a.call('put', 'a1');
        await b.call('put', 'b1');
        await b.call('remove', 'a1'); // another process's layer, now unheld
        await a.call('remove', 'b1');
        await b.call('remove', 'shared');
        expect(await observer.exists('shared')).toBe(false);
        expect(await a.exit()).toBe(0);
        expect(await b.exit()).toBe(0);
        expect(await mountsUnder(home())).toEqual([]);
      }, 60_000);

      test('three processes at once build on one shared layer; one mount per held layer, the shared one held three times; a reopened store lists exactly what is left', async () => {
        const seed = await openHere();
        await seed.create('shared', null);
        const { Readable } = await import('node:stream');
        const { layerTar } = await import('@cairnfs/testkit');
        await seed.applyDiff('shared', null, Readable.from([layerTar('shared', 9, 8192, false)]));
        const procs = [await start(), await start(), await start()];
        const paths = await Promise.all(procs.map(async (p, i) => {
          const mine: string[] = [];
          let parent = 'shared';
          for (let k = 0; k < 3; k++) {
            const id = `p${i}-${k}`;
            await p.call('create', id, parent);
            await p.apply(id, 100 * i + k, 4096, true);
            mine.push(await p.call<string>('get', id));
            parent = id;
          }
          return { shared: await p.call<string>('get', 'shared'), mine };
        }));
        expect(new Set(paths.map((p) => p.shared)).size).toBe(1);
        expect(await mountsAt(paths[0]!.shared)).toBe(1);
        for (const p of paths) for (const m of p.mine) expect(await mountsAt(m)).toBe(1);
        expect(await (seed as Counted).mountCount('shared')).toBe(3);
        for (const [i, p] of procs.entries()) expect(await p.call('mountCount', `p${i}-2`)).toBe(1);
        // Each lets go of everything and removes its top layer only.
        await Promise.all(procs.map(async (p, i) => {
          for (let k = 0; k < 3; k++) await p.call('put', `p${i}-${k}`);
          await p.call('put', 'shared');
          await p.call('remove', `p${i}-2`);
        }));
        expect(await mountsUnder(home())).toEqual([]);
        for (const p of procs) expect(await p.exit()).toBe(0);
        const again = await openHere();
        const left = [];
        for (const id of ['shared', ...[0, 1, 2].flatMap((i) => [0, 1, 2].map((k) => `p${i}-${k}`))]) if (await again.exists(id)) left.push(id);
        expect(left).toEqual(['shared', 'p0-0', 'p0-1', 'p1-0', 'p1-1', 'p2-0', 'p2-1']);
      }, 90_000);

      test('a process killed with SIGKILL mid-apply, holding mounts and locks: the other goes on within the lock timeout, the dead holds are dropped, nothing is torn', async () => {
        const victim = await start();
        const other = await start(5000);
        await victim.call('create', 'shared', null);
        await victim.apply('shared', 1, 8192);
        await victim.call('create', 'mine', 'shared');
        await victim.apply('mine', 2, 4096, true);
        const sharedPath = await victim.call<string>('get', 'shared');
        const minePath = await victim.call<string>('get', 'mine');
        expect(await other.call('get', 'shared')).toBe(sharedPath);
        await victim.call('create', 'big', 'shared');
        const apply = victim.applyStarted('big', 3, 48 << 20);
        await apply.begun;
        // Kill only once the kernel says the victim holds the layer lock of big (it is inside the apply).
        const lockFile = join(home(), '.cairn', 'locks', 'big');
        for (let i = 0; i < 500; i++) {
          const st = await stat(lockFile).catch(() => null);
          if (st && (await flockHolders(st.dev, st.ino)).some((h) => h.pid === victim.pid)) break;
          await new Promise((r) => setTimeout(r, 10));
        }
        const st = await stat(lockFile);
        expect((await flockHolders(st.dev, st.ino)).map((h) => h.pid)).toEqual([victim.pid]);
        await new Promise((r) => setTimeout(r, 50));
        victim.kill();
        await victim.exited;
        expect(await code(apply.done)).toBe('EXITED');

        const t0 = Date.now();
        expect(await other.call('mountCount', 'shared')).toBe(1); // the victim's hold is gone, ours stays
        expect(await mountsAt(sharedPath)).toBe(1);
        expect(await other.call('mountCount', 'mine')).toBe(0); // nobody left: unmounted when seen
        expect(await mountsAt(minePath)).toBe(0);
        // The half-applied layer is whole: its old (empty) tree, or removable at once.
        expect(await other.call('exists', 'big')).toBe(true);
        const bigPath = await other.call<string>('get', 'big');
        const seen = await readdir(bigPath);
        expect(seen).toContain('L-shared');
        expect(seen).not.toContain('L-big'); // never half applied
        await other.call('put', 'big');
        await other.call('remove', 'big');
        await other.call('remove', 'mine');
        await other.call('create', 'after', 'shared');
        await other.apply('after', 4, 4096, true);
        expect(Date.now() - t0).toBeLessThan(5000); // never waited out a lock the dead process had
        await other.call('put', 'shared');
        expect(await mountsAt(sharedPath)).toBe(0);
        expect(await other.exit()).toBe(0);
        // The dead apply's staging copy goes with the next open (its owner is gone).
        const again = await openHere();
        expect(await again.exists('after')).toBe(true);
        expect([...await readdir(join(home(), '.staging')).catch(() => []), ...await readdir(join(home(), '.trash')).catch(() => [])]).toEqual([]);
      }, 90_000);
    });
  });
}
