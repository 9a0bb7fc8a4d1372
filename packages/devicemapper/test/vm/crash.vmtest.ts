// kill -9 at random moments while a child process creates, applies, mounts and removes
// devicemapper layers on a loop-lvm pool; after each kill the home must reopen without
// help and hold exactly the finished layers: no thin device in the pool that the metadata
// does not name, no metadata entry without its thin device, no active device or mount
// left, the pool's transaction id in step with the metadata (see testkit/src/crash.ts).
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Layout, devicePrefixFor, devicemapperDriver, kernelMissing } from '@cairnfs/devicemapper';
import type { DeviceSetMeta, LayerMeta } from '@cairnfs/devicemapper';
import { describeBackend, layerTar, runCrashTrials, treeHash, withMounted } from '@cairnfs/testkit';
import { major, minor } from '@cairnfs/sys';
import { SMALL_POOL, harness, sh } from './harness.js';

/** CAIRN_DM_CRASH_TRIALS, else 8: each trial costs 20-45 s under emulation (a node start, pool set-up, mkfs, teardown). */
function trials(): number {
  const n = Number(process.env.CAIRN_DM_CRASH_TRIALS ?? process.env.CAIRN_CRASH_TRIALS);
  return Number.isInteger(n) && n > 0 ? n : 8;
}

function seed(): number {
  const n = Number(process.env.CAIRN_CRASH_SEED);
  return Number.isInteger(n) ? n : Math.floor(Math.random() * 2 ** 31);
}

/** A small ext4 base device keeps mkfs and every mount cheap under emulation. */
const OPTIONS = { ...SMALL_POOL, 'dm.basesize': '16M', 'dm.fs': 'ext4', 'dm.min_free_space': '0' };

async function readJsonOr<T>(path: string): Promise<T | null> {
  try { return JSON.parse(await readFile(path, 'utf8')) as T; } catch { return null; }
}

/** Thin device ids the pool holds and its transaction id, read from a metadata snapshot of the live pool. */
function poolContents(pool: string, metadataDev: string): { devices: number[]; transaction: number } {
  sh('dmsetup', ['message', pool, '0', 'reserve_metadata_snap']);
  let xml: string;
  try {
    xml = sh('thin_dump', ['--metadata-snap', '--skip-mappings', metadataDev]);
  } finally {
    sh('dmsetup', ['message', pool, '0', 'release_metadata_snap']);
  }
  const devices = [...xml.matchAll(/<device dev_id="(\d+)"/g)].map((m) => Number(m[1]));
  const transaction = Number(/<superblock [^>]*transaction="(\d+)"/.exec(xml)?.[1]);
  return { devices, transaction };
}

/**
 * The layer ids the home holds (one per metadata file), plus a named entry for each thing
 * that must not be there, so the harness's comparison with the finished layers fails on
 * it: `orphan-thin:N` (a thin device no metadata names), `lost-thin:ID` (a layer whose
 * device is not in the pool), `active:NAME` (a layer device left active), `tx:…` (the
 * open transaction still on disk, or a layer newer than the pool's transaction id), `tmp:…`
 * (a half-written metadata file), `mnt:ID` (a mount point of no layer).
 */
async function dmOnDisk(home: string): Promise<string[]> {
  const out: string[] = [];
  const metaDir = join(home, 'metadata');
  const entries = await readdir(metaDir).catch(() => [] as string[]);
  const layers = new Map<string, LayerMeta>();
  for (const name of entries) {
    if (name === '.deviceset') continue;
    if (name === '.transaction') { out.push('tx:open-transaction-left'); continue; }
    if (name.startsWith('.')) { out.push(`tmp:${name}`); continue; }
    const meta = await readJsonOr<LayerMeta>(join(metaDir, name));
    if (meta) layers.set(name, meta);
    out.push(name);
  }
  for (const name of await readdir(join(home, 'mnt')).catch(() => [] as string[])) {
    if (!name.startsWith('.') && !layers.has(name)) out.push(`mnt:${name}`);
  }
  const st = await stat(home).catch(() => null);
  if (!st) return out;
  const prefix = devicePrefixFor(major(st.dev), minor(st.dev), st.ino);
  const pool = `${prefix}-pool`;
  const active = sh('dmsetup', ['ls']).split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n.startsWith(`${prefix}-`));
  for (const name of active) if (name !== pool) out.push(`active:${name}`);
  if (!active.includes(pool)) return out; // the driver is closed: nothing more to read
  const metadataDev = sh('losetup', ['-n', '-O', 'NAME', '-j', join(home, 'devicemapper', 'metadata')]).trim().split('\n')[0]!;
  const { devices, transaction } = poolContents(pool, metadataDev);
  const status = Number(sh('dmsetup', ['status', pool]).trim().split(/\s+/)[3]);
  if (status !== transaction) out.push(`tx:status-${status}-vs-metadata-${transaction}`);
  const set = await readJsonOr<DeviceSetMeta>(join(metaDir, '.deviceset'));
  const known = new Set<number>(set?.base ? [set.base.deviceId] : []);
  for (const [id, meta] of layers) {
    known.add(meta.deviceId);
    if (!devices.includes(meta.deviceId)) out.push(`lost-thin:${id}`);
    if (meta.transactionId > transaction) out.push(`tx:${id}-at-${meta.transactionId}-pool-at-${transaction}`);
  }
  for (const dev of devices) if (!known.has(dev)) out.push(`orphan-thin:${dev}`);
  return out;
}

/** Devices and loop devices of every cairn home, to prove the run leaves none behind. */
function leftovers(): string[] {
  const dm = sh('dmsetup', ['ls']).split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n.startsWith('cairn-'));
  const loops = sh('losetup', ['-n', '-O', 'BACK-FILE', '-l']).split('\n').map((l) => l.trim()).filter((f) => f.includes('cairn-crash-'));
  return [...dm, ...loops].sort();
}

describeBackend('devicemapper', kernelMissing(), () => {
  test('kill during applyDiff: open puts the layer back from its undo snapshot and deletes the half-applied device', async () => {
    const t = await harness(OPTIONS);
    try {
      const d = t.driver;
      await d.create('a');
      await d.applyDiff('a', null, Readable.from([layerTar('a', 1, 8192, false)]));
      await d.create('b', 'a');
      const before = await withMounted(d, 'b', (root) => treeHash(root));
      const bMeta = await d.metadata('b');
      const pool = new Map(await d.status()).get('Pool Name')!;
      await d.cleanup();
      // What a kill mid-apply leaves: the undo snapshot recorded, part of the tar in the device.
      const again = await t.reopen();
      const layout = new Layout(t.home.home, '');
      const meta = JSON.parse(await readFile(layout.layerMeta('b'), 'utf8')) as LayerMeta;
      const undoId = Number(bMeta.DeviceId) + 100;
      sh('dmsetup', ['message', pool, '0', `create_snap ${undoId} ${meta.deviceId}`]);
      await writeFile(layout.layerMeta('b'), JSON.stringify({ ...meta, undoDeviceId: undoId }));
      await withMounted(again, 'b', (root) => writeFile(join(root, 'half-applied'), 'x'));
      await again.cleanup();
      const recovered = await t.reopen();
      expect(await recovered.exists('b')).toBe(true);
      expect(await withMounted(recovered, 'b', (root) => treeHash(root))).toBe(before);
      expect((await recovered.metadata('b')).DeviceId).toBe(String(undoId));
      expect((await dmOnDisk(t.home.home)).sort()).toEqual(['a', 'b']);
      // Applying again works and leaves no undo snapshot behind.
      await recovered.applyDiff('b', 'a', Readable.from([layerTar('b', 2, 8192)]));
      expect(JSON.parse(await readFile(layout.layerMeta('b'), 'utf8'))).toMatchObject({ applied: true, deviceId: undoId });
      expect(JSON.parse(await readFile(layout.layerMeta('b'), 'utf8')).undoDeviceId).toBeUndefined();
      expect((await dmOnDisk(t.home.home)).sort()).toEqual(['a', 'b']);
    } finally {
      await t.dispose();
    }
  }, 120_000);

  // The children apply on their calling thread: the same native apply as on libuv's pool,
  // the kill takes it alike, and under emulation one thread less to schedule per child.
  const applyThread = process.env.CAIRN_APPLY_THREAD;
  beforeAll(() => { process.env.CAIRN_APPLY_THREAD = '0'; });
  afterAll(() => {
    if (applyThread === undefined) delete process.env.CAIRN_APPLY_THREAD;
    else process.env.CAIRN_APPLY_THREAD = applyThread;
  });

  test(`devicemapper (loop-lvm) survives ${trials()} kill -9 trials: no orphaned or lost thin devices, no mounts, transaction ids in step`, async () => {
    const s = seed();
    const before = leftovers();
    const report = await runCrashTrials({
      factory: devicemapperDriver,
      options: OPTIONS,
      trials: trials(),
      seed: s,
      listOnDisk: dmOnDisk,
      maxLayers: 3,
      // Under emulation an open (loop devices, pool, base device) takes seconds and a plan a few more.
      openMs: 2500,
      planMs: 4000,
      log: (l) => console.log(l),
    });
    console.log(`devicemapper crash trials (seed ${s}): ${JSON.stringify(report)}`);
    expect(report.trials).toBe(trials());
    expect(leftovers()).toEqual(before);
    // Most kills must land inside driver work, or the test proves little.
    expect(report.finished).toBeLessThan(report.trials / 2);
  }, 900_000);
});
