// kill -9 at random moments while a child process imports (and removes) generated
// multi-layer gzip images into a LayerStore; after each kill the store must reopen on
// its own and hold what it promises:
// - an image whose import the child reported finished is listed, with its tag;
// - every listed image is whole: each of its layers is in the store, its driver layer
//   exists and holds the tree of a reference built with plain applyLayer (hash);
// - an image not reported finished is listed whole or not at all;
// - a removal reported finished leaves the image gone;
// - layerdb/tmp is empty after open (the store finished or undid what the kill cut);
// - layers an interrupted import committed, or an interrupted removal left, may have
//   no user after the reopen: gc() removes them. After gc every store layer has a user
//   and the driver holds exactly the store's layers (no orphan, no loss);
// - no mount is left under the home after cleanup.
import { createHash } from 'node:crypto';
import { cp, mkdir, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { readMountInfo } from '@cairnfs/core';
import { applyLayer } from '@cairnfs/archive';
import type { DriverFactory, StorageDriver } from '@cairnfs/core';
import { LayerStore, chainIds } from '@cairnfs/image';
import { overlay2Driver } from '@cairnfs/overlay2';
import { vfsDriver } from '@cairnfs/vfs';
import { describeBackend, killChild, layerTar, makeLoopFs, nextLine, prng, spawnTsChild, treeHash } from '@cairnfs/testkit';
import type { CrashChild, LoopFs } from '@cairnfs/testkit';
import { tarDir, writeDockerSave } from '@cairnfs/testkit';
import type { ImportCrashOp, ImportCrashPlan } from './crash-import-child.js';

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'crash-import-child.ts');

function trialsFor(ciDefault: number): number {
  const n = Number(process.env.CAIRN_CRASH_TRIALS);
  return Number.isInteger(n) && n > 0 ? n : ciDefault;
}

function seedOf(): number {
  const n = Number(process.env.CAIRN_CRASH_SEED);
  return Number.isInteger(n) ? n : Math.floor(Math.random() * 2 ** 31);
}

interface TestImage { tag: string; id: string; path: string; chains: string[] }

/** Layers by name; images share base layers as real ones do (base0 under four of them, a chain extended by another image). */
const LAYERS: Record<string, { seed: number; kib: number }> = {
  base0: { seed: 11, kib: 256 }, base1: { seed: 12, kib: 192 }, mid0: { seed: 13, kib: 96 },
  a: { seed: 21, kib: 64 }, b: { seed: 22, kib: 64 }, c1: { seed: 23, kib: 48 }, c2: { seed: 24, kib: 48 },
  d: { seed: 25, kib: 64 }, e: { seed: 26, kib: 32 },
};
const IMAGES: Record<string, string[]> = {
  'crash/a:1': ['base0', 'mid0', 'a'],
  'crash/b:1': ['base0', 'mid0', 'b'],
  'crash/c:1': ['base0', 'c1', 'c2'],
  'crash/d:1': ['base1', 'd'],
  'crash/e:1': ['base0', 'mid0', 'a', 'e'],
};

/** Writes each image as a gzip docker-save tarball and builds a reference tree (and its hash) for every chain. */
async function makeImages(dir: string): Promise<{ images: TestImage[]; refHash: Map<string, string> }> {
  const tars = new Map(Object.entries(LAYERS).map(([name, l]) => [name, layerTar(name, l.seed, l.kib * 1024, name !== 'base0' && name !== 'base1')]));
  const refHash = new Map<string, string>();
  const refDir = new Map<string, string>();
  const images: TestImage[] = [];
  for (const [i, [tag, names]] of Object.entries(IMAGES).entries()) {
    const layers = names.map((n) => tars.get(n)!);
    const save = join(dir, `save${i}`);
    const id = await writeDockerSave(save, layers, tag, 'gzip');
    const path = join(dir, `image${i}.tar`);
    tarDir(save, path);
    const chains = chainIds(layers.map((l) => `sha256:${sha256(l)}`));
    for (const [j, chain] of chains.entries()) {
      if (refHash.has(chain)) continue;
      const ref = join(dir, 'refs', chain.slice(7, 23));
      await mkdir(ref, { recursive: true, mode: 0o755 });
      if (j > 0) await cp(refDir.get(chains[j - 1]!)!, ref, { recursive: true, verbatimSymlinks: true });
      await applyLayer(ref, Readable.from([layers[j]!]), { whiteouts: 'delete' });
      refDir.set(chain, ref);
      refHash.set(chain, await treeHash(ref));
    }
    images.push({ tag, id, path, chains });
  }
  return { images, refHash };
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Layer ids the driver has anything of on disk. */
async function driverLayersOnDisk(name: string, home: string): Promise<string[]> {
  if (name === 'vfs') {
    const dirs = await readdir(join(home, 'dir')).catch(() => [] as string[]);
    const metas = (await readdir(join(home, 'meta')).catch(() => [] as string[])).map((n) => (n.endsWith('.json') ? n.slice(0, -5) : `meta/${n}`));
    return [...new Set([...dirs, ...metas])];
  }
  return (await readdir(home)).filter((n) => n !== 'l' && !n.startsWith('.'));
}

interface ImportCrashReport { trials: number; killedDuring: Record<string, number>; finished: number; orphanLayersCollected: number; millis: number }

async function runImportCrashTrials(factory: DriverFactory, base: string, trials: number, seed: number): Promise<ImportCrashReport> {
  const started = Date.now();
  const work = join(base, factory.name);
  const root = join(work, 'root');
  await mkdir(root, { recursive: true });
  const { images, refHash } = await makeImages(join(work, 'src'));
  const home = join(root, factory.name);
  const report: ImportCrashReport = { trials: 0, killedDuring: {}, finished: 0, orphanLayersCollected: 0, millis: 0 };
  const rnd = prng(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  let present = new Set<string>();
  let opMs = 150; // how long one operation of a plan takes: a first guess, then a running average
  // The same per kind of work (an import of one image with layers to make, a remove, a gc):
  // the images differ in size and share layers, so one average aims short imports too late.
  const opMsOf = new Map<string, number>();
  let openMs = 300;
  let warm: CrashChild = spawnTsChild(CHILD, [factory.name]);
  const fail = (trial: number, what: string): never => {
    throw new Error(`import kill trial ${trial} on ${factory.name} (CAIRN_CRASH_SEED=${seed}): ${what}`);
  };
  try {
    for (let trial = 0; trial < trials; trial++) {
      const ops: ImportCrashOp[] = [];
      if (present.size > 0 && rnd() < 0.45) ops.push({ op: 'remove', ref: pick([...present]) });
      for (let n = 1 + Math.floor(rnd() * 2); n > 0; n--) {
        const absent = images.filter((img) => !present.has(img.tag));
        ops.push({ op: 'import', path: (absent.length > 0 && rnd() < 0.8 ? pick(absent) : pick(images)).path });
      }
      if (rnd() < 0.1) ops.push({ op: 'gc' });

      const child = warm;
      if ((await nextLine(child)) !== 'loaded') fail(trial, 'child did not start');
      warm = spawnTsChild(CHILD, [factory.name]);
      child.proc.stdin!.end(JSON.stringify({ root, ops } satisfies ImportCrashPlan) + '\n');
      const t0 = Date.now();
      // The kill lands during the open (one in ten), or within an operation picked at random,
      // timed from its start: plans vary from a no-op re-import to three full imports, and
      // a window over the whole plan let most of them finish once imports got faster.
      // An operation that ends before its kill (a no-op re-import) passes the kill on to the next.
      // The operation is picked among those with work to do: an import of an image the store
      // has (before the plan, or from an earlier operation of it) is a no-op that ends before
      // most kills, which then pass on, and a plan whose last operation is one finishes.
      const killEarly = rnd() < 0.1;
      const had = new Set(present);
      const working = ops.flatMap((o, i) => {
        if (o.op === 'remove') had.delete(o.ref);
        if (o.op !== 'import') return [i];
        const tag = images.find((img) => img.path === o.path)!.tag;
        if (had.has(tag)) return [];
        had.add(tag);
        return [i];
      });
      // Three in four aim at an import with work (what the trials are for), the rest at any
      // operation with work (removes and gc have their own kill points).
      const importing = working.filter((i) => ops[i]!.op === 'import');
      let target = importing.length > 0 && rnd() < 0.75 ? pick(importing) : working.length > 0 ? pick(working) : Math.floor(rnd() * ops.length);
      const workKey = (i: number): string => {
        const o = ops[i]!;
        return !working.includes(i) ? 'no-op' : o.op === 'import' ? `import ${o.path}` : o.op;
      };
      const delay = Math.floor(rnd() * openMs);
      const beganAt = new Map<number, number>();
      let fired = false;
      const kill = (): void => { fired = true; killChild(child); };
      let timer: NodeJS.Timeout | undefined = killEarly ? setTimeout(kill, delay) : undefined;
      const begun = new Set<number>();
      const ended = new Set<number>();
      let opened = false;
      let done = false;
      for (let line = await nextLine(child); line !== null; line = await nextLine(child)) {
        const msg = JSON.parse(line) as { opened?: true; begin?: number; end?: number; error?: string; done?: true };
        if (msg.error !== undefined) fail(trial, `the child's own operation failed: ${msg.error}`);
        if (msg.opened) {
          opened = true;
          openMs = 0.8 * openMs + 0.2 * (Date.now() - t0);
        }
        if (msg.begin !== undefined) {
          begun.add(msg.begin);
          beganAt.set(msg.begin, Date.now());
          // Within the first 45 % of an average import: a shorter one still ends before many
          // kills (60 % let most plans finish once imports got a quarter faster).
          if (!killEarly && msg.begin === target) timer = setTimeout(kill, Math.floor(rnd() * 0.45 * (opMsOf.get(workKey(target)) ?? opMs)));
        }
        if (msg.end !== undefined) {
          ended.add(msg.end);
          const took = Date.now() - beganAt.get(msg.end)!;
          if (ops[msg.end]!.op === 'import') opMs = 0.8 * opMs + 0.2 * took;
          const key = workKey(msg.end);
          opMsOf.set(key, 0.7 * (opMsOf.get(key) ?? took) + 0.3 * took);
          if (!killEarly && !fired && msg.end === target && target + 1 < ops.length) {
            clearTimeout(timer);
            target++;
          }
        }
        if (msg.done) done = true;
      }
      clearTimeout(timer);
      await child.exited;
      report.trials++;
      if (done) report.finished++;
      const inflight = [...begun].find((i) => !ended.has(i));
      const where = !opened ? 'open' : inflight !== undefined ? ops[inflight]!.op : done ? 'finished' : 'between ops';
      report.killedDuring[where] = (report.killedDuring[where] ?? 0) + 1;

      // What must hold: start from the images known present, follow the journal.
      const mustHave = new Set(present);
      const mustNotHave = new Set(images.map((i) => i.tag).filter((t) => !present.has(t)));
      for (const [i, op] of ops.entries()) {
        if (!begun.has(i)) break;
        const tag = op.op === 'import' ? images.find((img) => img.path === op.path)!.tag : op.op === 'remove' ? op.ref : null;
        if (tag === null) continue;
        if (ended.has(i)) {
          (op.op === 'import' ? mustHave : mustNotHave).add(tag);
          (op.op === 'import' ? mustNotHave : mustHave).delete(tag);
        } else {
          mustNotHave.delete(tag); // an interrupted import may or may not have landed
          if (op.op === 'remove') mustHave.delete(tag); // nor an interrupted removal
        }
      }
      const ctx = `after a kill during ${where} (ops ${JSON.stringify(ops.map((o) => (o.op === 'import' ? `import ${images.find((i) => i.path === o.path)!.tag}` : o.op === 'remove' ? `remove ${o.ref}` : 'gc')))}, ${ended.size} finished)`;

      let driver: StorageDriver;
      try {
        driver = await factory.open({ root, home, options: {}, lockTimeoutMs: 5000 });
      } catch (err) {
        return fail(trial, `the driver did not reopen ${ctx}: ${String(err)}`);
      }
      try {
        let store: LayerStore;
        try {
          store = await LayerStore.open(driver);
        } catch (err) {
          return fail(trial, `the layer store did not reopen ${ctx}: ${String(err)}`);
        }
        const tmpLeft = await readdir(join(store.dir, 'layerdb', 'tmp')).catch(() => [] as string[]);
        if (tmpLeft.length > 0) fail(trial, `layerdb/tmp still holds ${tmpLeft.join(', ')} after reopening ${ctx}`);
        const listed = (): Set<string> => new Set(store.images().flatMap((i) => i.tags));
        for (const tag of mustHave) if (!listed().has(tag)) fail(trial, `image ${tag} was reported imported but is not listed ${ctx}`);
        for (const tag of mustNotHave) if (listed().has(tag)) fail(trial, `image ${tag} is listed but was never imported or was removed ${ctx}`);
        const layers = new Map(store.layers().map((l) => [l.chainId, l]));
        const checked = new Set<string>();
        for (const img of store.images()) {
          const known = images.find((i) => i.id === img.id);
          if (!known) fail(trial, `an unknown image ${img.id} is listed ${ctx}`);
          for (const chain of img.layers) {
            const l = layers.get(chain);
            if (!l) fail(trial, `image ${img.tags.join(',') || img.id} is listed but its layer ${chain} is missing (a half image) ${ctx}`);
            if (checked.has(chain)) continue;
            checked.add(chain);
            if (!(await driver.exists(l!.cacheId))) fail(trial, `layer ${chain} is in the store but its driver layer ${l!.cacheId} does not exist ${ctx}`);
            const path = await driver.get(l!.cacheId);
            const hash = await treeHash(path).finally(() => driver.put(l!.cacheId));
            if (hash !== refHash.get(chain)) fail(trial, `layer ${chain} (driver ${l!.cacheId}) holds tree ${hash}, expected ${refHash.get(chain)} ${ctx}`);
          }
        }
        const unused = store.layers().filter((l) => store.refcount(l.chainId) === 0).length;
        report.orphanLayersCollected += unused;
        await store.gc();
        const after = store.layers();
        const stillUnused = after.filter((l) => store.refcount(l.chainId) === 0).map((l) => l.chainId);
        if (stillUnused.length > 0) fail(trial, `gc left layers nobody uses: ${stillUnused.join(', ')} ${ctx}`);
        const onDisk = (await driverLayersOnDisk(factory.name, home)).sort();
        const expected = after.map((l) => l.cacheId).sort();
        if (JSON.stringify(onDisk) !== JSON.stringify(expected)) {
          fail(trial, `after gc the driver holds ${JSON.stringify(onDisk)}, the store's layers are ${JSON.stringify(expected)} (orphans or losses) ${ctx}`);
        }
        for (const tag of mustHave) if (!listed().has(tag)) fail(trial, `gc dropped image ${tag} ${ctx}`);
        present = listed();
      } finally {
        await driver.cleanup();
      }
      const mounts = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${home}/`));
      if (mounts.length > 0) fail(trial, `mounts left after reopen + cleanup: ${mounts.map((m) => m.mountPoint).join(', ')}`);
    }
  } finally {
    killChild(warm);
    await warm.exited;
  }
  report.millis = Date.now() - started;
  return report;
}

describeBackend('root', process.getuid?.() === 0 ? null : 'the import kill trials mount layers and need root', () => {
  // On a tmpfs: a SIGKILL keeps the page cache, so fsync is pure cost here (power loss is another question).
  let fs: LoopFs;
  beforeAll(async () => { fs = await makeLoopFs('tmpfs', { sizeMiB: 512 }); });
  afterAll(async () => { await fs?.dispose(); });

  test.each<[string, DriverFactory, number]>([['overlay2', overlay2Driver, 30], ['vfs', vfsDriver, 20]])(
    'on %s, imports of gzip images killed at random moments: the store reopens alone, finished images whole, no half image, gc leaves no orphan',
    async (_name, factory, ciTrials) => {
      const seed = seedOf();
      console.log(`${factory.name} import kill trials: CAIRN_CRASH_SEED=${seed}`);
      const report = await runImportCrashTrials(factory, fs.dir, trialsFor(ciTrials), seed);
      console.log(`${factory.name} import kill trials (seed ${seed}): ${JSON.stringify(report)}`);
      expect(report.trials).toBe(trialsFor(ciTrials));
      // What makes the trials worth running is kills that land inside an import; how many
      // plans finish first depends on the machine's load (4 of 20 here at load 1, 10 of 20
      // under CI's parallel suites), so that is not what is asserted.
      expect(report.killedDuring.import ?? 0).toBeGreaterThanOrEqual(report.trials / 4);
    }, 600_000);
});
