import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CairnError, DEFAULT_LOCK_TIMEOUT_MS, detectBackingFs, isCairnError, openDriver, probe, Registry, StoreLocks, supportsDType,
} from '@cairnfs/core';
import type {
  BackingFs, DriverContext, DriverFactory, ErrorCode, ProbeResult, StorageDriver,
} from '@cairnfs/core';
import { describeBackend, loopFsMissing, makeLoopFs } from '@cairnfs/testkit';
import type { LoopFs } from '@cairnfs/testkit';

/**
 * Test drivers: real probes of the real backing filesystem (statfs, d_type), the real
 * store lock taken by each operation (status); only the layer operations are absent,
 * since the registry never calls them.
 */
class TestDriver implements StorageDriver {
  private readonly locks: StoreLocks;
  constructor(readonly name: string, readonly home: string, readonly ctx: DriverContext) {
    this.locks = new StoreLocks(home, { timeoutMs: ctx.lockTimeoutMs, what: `${name} test table` });
  }
  private absent(): never { throw new CairnError('ERR_NOT_SUPPORTED', `${this.name} test driver has no layer operations`); }
  async create(): Promise<void> { this.absent(); }
  async createReadWrite(): Promise<void> { this.absent(); }
  async exists(): Promise<boolean> { return false; }
  async remove(): Promise<void> { this.absent(); }
  async get(): Promise<string> { this.absent(); }
  async put(): Promise<void> { this.absent(); }
  async diff(): Promise<never> { this.absent(); }
  async changes(): Promise<never> { this.absent(); }
  async applyDiff(): Promise<number> { this.absent(); }
  async diffSize(): Promise<number> { this.absent(); }
  async status(): Promise<Array<[string, string]>> {
    return this.locks.read('report status', async () => [['Backing Filesystem', (await detectBackingFs(this.home)).name]]);
  }
  async metadata(): Promise<Record<string, string>> { return {}; }
  async cleanup(): Promise<void> { await this.locks.close(); }
}

interface TestFactorySpec {
  name: string;
  priority: number;
  requiresOwnFilesystem?: boolean;
  optionPrefixes?: string[];
  /** Null when the driver can run on this filesystem, else why not and with which code. */
  refuse?: (fs: BackingFs, ctx: DriverContext) => Promise<{ reason: string; code: ErrorCode } | null>;
}

function testFactory(spec: TestFactorySpec): DriverFactory & { probes: number } {
  const factory = {
    name: spec.name,
    priority: spec.priority,
    probes: 0,
    ...(spec.requiresOwnFilesystem ? { requiresOwnFilesystem: true } : {}),
    ...(spec.optionPrefixes ? { optionPrefixes: spec.optionPrefixes } : {}),
    async probe(ctx: DriverContext): Promise<ProbeResult> {
      factory.probes++;
      const fs = await detectBackingFs(ctx.home);
      const refusal = spec.refuse ? await spec.refuse(fs, ctx) : null;
      return refusal
        ? { name: spec.name, priority: spec.priority, usable: false, backingFs: fs.name, ...refusal }
        : { name: spec.name, priority: spec.priority, usable: true, backingFs: fs.name };
    },
    async open(ctx: DriverContext): Promise<StorageDriver> {
      await mkdir(ctx.home, { recursive: true });
      return new TestDriver(spec.name, ctx.home, ctx);
    },
    async hasLayers(ctx: DriverContext): Promise<boolean> {
      try {
        return (await readdir(ctx.home)).some((n) => !n.startsWith('.'));
      } catch {
        return false;
      }
    },
  };
  return factory;
}

/** overlay2-like: runs anywhere with d_type, refuses the rest as moby's overlay2 does. */
const overlayLike = (): ReturnType<typeof testFactory> => testFactory({
  name: 'overlay2', priority: 1,
  refuse: async (_fs, ctx) => (await supportsDType(ctx.root))
    ? null
    : { reason: 'the backing filesystem does not support d_type (xfs needs ftype=1)', code: 'ERR_INCOMPATIBLE_FS' },
});
/** btrfs-like: its probe accepts only btrfs. */
const btrfsLike = (): ReturnType<typeof testFactory> => testFactory({
  name: 'btrfs', priority: 2, requiresOwnFilesystem: true,
  refuse: async (fs) => fs.name === 'btrfs' ? null : { reason: `backing filesystem is ${fs.name}, not btrfs`, code: 'ERR_INCOMPATIBLE_FS' },
});
/** zfs-like whose probe says yes everywhere: only the registry's own-filesystem rule keeps it from being auto-picked. */
const eagerOwnFs = (): ReturnType<typeof testFactory> => testFactory({ name: 'zfs', priority: 3, requiresOwnFilesystem: true });
const vfsLike = (): ReturnType<typeof testFactory> => testFactory({ name: 'vfs', priority: 6 });

function registryOf(...factories: DriverFactory[]): Registry {
  const registry = new Registry();
  for (const f of factories) registry.register(f);
  return registry;
}

async function failure(promise: Promise<unknown>): Promise<CairnError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof CairnError) return err;
    throw err;
  }
  throw new Error('expected a CairnError');
}

const opened: StorageDriver[] = [];
async function open(opts: Parameters<typeof openDriver>[0]): Promise<StorageDriver> {
  const driver = await openDriver(opts);
  opened.push(driver);
  return driver;
}
afterEach(async () => {
  for (const d of opened.splice(0)) await d.cleanup();
});

describe('Registry', () => {
  test('lists drivers in priority order whatever the registration order', () => {
    const registry = registryOf(vfsLike(), btrfsLike(), overlayLike());
    expect(registry.list().map((f) => f.name)).toEqual(['overlay2', 'btrfs', 'vfs']);
    expect(registry.get('btrfs')?.priority).toBe(2);
    expect(registry.get('aufs')).toBeUndefined();
  });

  test('registering the same factory twice is harmless, a second factory under one name is refused', () => {
    const vfs = vfsLike();
    const registry = registryOf(vfs);
    registry.register(vfs);
    expect(registry.list()).toHaveLength(1);
    expect(() => registry.register(vfsLike())).toThrow(/already registered/);
    expect(() => registry.register(testFactory({ name: '../escape', priority: 9 }))).toThrow(CairnError);
  });
});

describe('openDriver / probe argument checks', () => {
  let root: string;
  beforeEach(async () => { root = await mkdtemp(join(tmpdir(), 'cairn-reg-')); });
  afterEach(async () => { await rm(root, { recursive: true, force: true }); });

  test('a relative root is ERR_INVALID_OPTION before anything is probed', async () => {
    const vfs = vfsLike();
    const err = await failure(openDriver({ root: 'var/lib/cairn', registry: registryOf(vfs) }));
    expect(err.code).toBe('ERR_INVALID_OPTION');
    expect(err.message).toMatch(/absolute/);
    expect(vfs.probes).toBe(0);
    expect((await failure(probe({ root: './x', registry: registryOf(vfs) }))).code).toBe('ERR_INVALID_OPTION');
  });

  test('an explicit driver that is not registered is ERR_DRIVER_NOT_FOUND listing the registered ones', async () => {
    const err = await failure(openDriver({ root, driver: 'aufs', registry: registryOf(vfsLike(), overlayLike()) }));
    expect(err.code).toBe('ERR_DRIVER_NOT_FOUND');
    expect(err.message).toContain('"aufs"');
    expect(err.message).toContain('overlay2, vfs');
  });

  test('an option with no driver prefix is refused; another driver\'s options are not passed on', async () => {
    const registry = registryOf(vfsLike(), overlayLike());
    const typo = await failure(openDriver({ root, registry, options: { size: '10G' } }));
    expect(typo.code).toBe('ERR_INVALID_OPTION');
    expect(typo.message).toContain('"size"');
    const driver = await open({ root, registry, driver: 'vfs', options: { 'vfs.size': '1G', 'overlay2.size': '2G', 'dm.basesize': '20G' } });
    expect((driver as TestDriver).ctx.options).toEqual({ 'vfs.size': '1G' });
  });

  test('a driver with its own option prefixes receives options under them', async () => {
    const dm = testFactory({ name: 'devicemapper', priority: 4, optionPrefixes: ['dm'] });
    const driver = await open({ root, registry: registryOf(dm), driver: 'devicemapper', options: { 'dm.basesize': '20G', 'vfs.size': '1G' } });
    expect((driver as TestDriver).ctx.options).toEqual({ 'dm.basesize': '20G' });
  });

  test('probe() creates nothing, not even the root', async () => {
    const missingRoot = join(root, 'not-yet');
    const results = await probe({ root: missingRoot, registry: registryOf(overlayLike(), vfsLike()) });
    expect(results.map((r) => r.name)).toEqual(['overlay2', 'vfs']);
    await expect(stat(missingRoot)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readdir(root)).toEqual([]);
  });

  test('a probe that throws makes that driver unusable with the error as reason; the others still report', async () => {
    const broken = { ...vfsLike(), name: 'aufs', priority: 5, probe: async (): Promise<ProbeResult> => { throw new CairnError('ERR_PREREQUISITES', 'aufs module missing'); } };
    const results = await probe({ root, registry: registryOf(broken, vfsLike()) });
    expect(results[0]).toMatchObject({ name: 'aufs', usable: false, code: 'ERR_PREREQUISITES', chosen: false });
    expect(results[0]!.reason).toContain('aufs module missing');
    expect(results[1]).toMatchObject({ name: 'vfs', usable: true, chosen: true });
  });

  test('two opens of one driver home both succeed (no lock outlives an operation); lockTimeoutMs is handed to the driver, 30 s by default', async () => {
    const registry = registryOf(vfsLike());
    const first = await open({ root, registry }) as TestDriver;
    const second = await open({ root, registry, lockTimeoutMs: 200 }) as TestDriver;
    expect(first.ctx.lockTimeoutMs).toBe(DEFAULT_LOCK_TIMEOUT_MS);
    expect(DEFAULT_LOCK_TIMEOUT_MS).toBe(30_000);
    expect(second.ctx.lockTimeoutMs).toBe(200);
    expect(await first.status()).toEqual(await second.status());
    await first.cleanup();
    await second.cleanup();
    await expect(failure(openDriver({ root, registry, lockTimeoutMs: -1 }))).resolves.toMatchObject({ code: 'ERR_INVALID_OPTION' });
  });
});

describeBackend('loop-ext4', loopFsMissing('ext4'), () => {
  let fs: LoopFs;
  let root: string;
  beforeAll(async () => { fs = await makeLoopFs('ext4'); });
  afterAll(async () => { await fs?.dispose(); });
  beforeEach(async () => { root = await mkdtemp(join(fs.dir, 'root-')); });
  afterEach(async () => { await rm(root, { recursive: true, force: true }); });

  test('on ext4 the highest-priority usable driver is chosen and home is ${root}/${name}', async () => {
    const driver = await open({ root, registry: registryOf(vfsLike(), btrfsLike(), overlayLike()) });
    expect(driver.name).toBe('overlay2');
    expect(driver.home).toBe(join(root, 'overlay2'));
    expect(await driver.status()).toEqual([['Backing Filesystem', 'extfs']]);
  });

  test('on ext4 a btrfs-only driver is never auto-picked, and probe() says why for each driver', async () => {
    const registry = registryOf(vfsLike(), btrfsLike(), eagerOwnFs());
    const driver = await open({ root, registry });
    expect(driver.name).toBe('vfs');
    const report = await probe({ root, registry });
    expect(report.map((r) => [r.name, r.usable, r.chosen])).toEqual([
      ['btrfs', false, false], ['zfs', true, false], ['vfs', true, true],
    ]);
    expect(report[0]).toMatchObject({ backingFs: 'extfs', code: 'ERR_INCOMPATIBLE_FS', reason: 'backing filesystem is extfs, not btrfs' });
    expect(report[1]!.reason).toMatch(/backing filesystem is extfs.*auto-selected only on zfs/);
    expect(report[2]!.reason).toBeUndefined();
  });

  test('a usable driver that is not chosen is told it lost on priority', async () => {
    const report = await probe({ root, registry: registryOf(vfsLike(), overlayLike()) });
    expect(report[0]).toMatchObject({ name: 'overlay2', chosen: true, prior: false });
    expect(report[0]!.reason).toBeUndefined();
    expect(report[1]).toMatchObject({ name: 'vfs', usable: true, chosen: false, reason: 'usable, but overlay2 comes first by priority' });
  });

  test('an explicit driver whose probe refuses fails with the probe\'s code and reason', async () => {
    const err = await failure(openDriver({ root, driver: 'btrfs', registry: registryOf(vfsLike(), btrfsLike()) }));
    expect(err.code).toBe('ERR_INCOMPATIBLE_FS');
    expect(err.message).toContain('backing filesystem is extfs, not btrfs');
    expect(err.message).toContain(join(root, 'btrfs'));
    await expect(stat(join(root, 'btrfs'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('an explicit own-filesystem driver that probes usable opens even off its filesystem', async () => {
    const driver = await open({ root, driver: 'zfs', registry: registryOf(vfsLike(), eagerOwnFs()) });
    expect(driver.name).toBe('zfs');
  });

  test('a prior driver with layers wins over a higher-priority one', async () => {
    await mkdir(join(root, 'vfs', 'layer1'), { recursive: true });
    await mkdir(join(root, 'overlay2')); // an empty home is not a prior driver
    const registry = registryOf(vfsLike(), overlayLike());
    const driver = await open({ root, registry });
    expect(driver.name).toBe('vfs');
    await driver.cleanup();
    const report = await probe({ root, registry });
    expect(report.map((r) => [r.name, r.prior, r.chosen])).toEqual([['overlay2', false, false], ['vfs', true, true]]);
    expect(report[0]!.reason).toContain(`${join(root, 'vfs')} already holds layers`);
  });

  test('a lock file alone does not make a prior driver', async () => {
    const registry = registryOf(vfsLike(), overlayLike());
    await (await open({ root, registry, driver: 'vfs' })).cleanup();
    const driver = await open({ root, registry });
    expect(driver.name).toBe('overlay2');
  });

  test('two prior drivers are ERR_MULTIPLE_PRIOR_DRIVERS naming both; an explicit driver still opens', async () => {
    await mkdir(join(root, 'vfs', 'layer1'), { recursive: true });
    await mkdir(join(root, 'overlay2', 'layer2'), { recursive: true });
    const registry = registryOf(vfsLike(), overlayLike());
    const err = await failure(openDriver({ root, registry }));
    expect(err.code).toBe('ERR_MULTIPLE_PRIOR_DRIVERS');
    expect(err.message).toContain('overlay2, vfs');
    expect(err.message).toContain(join(root, 'vfs'));
    expect(err.message).toMatch(/pass driver explicitly/);
    const report = await probe({ root, registry });
    expect(report.every((r) => r.prior && !r.chosen)).toBe(true);
    expect(report[0]!.reason).toContain('more than one driver');
    expect((await open({ root, registry, driver: 'vfs' })).name).toBe('vfs');
  });

  test('a prior driver that can no longer run is an error, never a silent switch', async () => {
    await mkdir(join(root, 'btrfs', 'layer1'), { recursive: true });
    const registry = registryOf(vfsLike(), btrfsLike());
    const err = await failure(openDriver({ root, registry }));
    expect(err.code).toBe('ERR_INCOMPATIBLE_FS');
    expect(err.message).toContain(`holds layers in ${join(root, 'btrfs')}`);
    expect(err.message).toContain('not btrfs');
    await expect(stat(join(root, 'vfs'))).rejects.toMatchObject({ code: 'ENOENT' });
    const report = await probe({ root, registry });
    expect(report.map((r) => [r.name, r.prior, r.chosen])).toEqual([['btrfs', true, false], ['vfs', false, false]]);
  });
});

describeBackend('loop-btrfs', loopFsMissing('btrfs'), () => {
  let fs: LoopFs;
  beforeAll(async () => { fs = await makeLoopFs('btrfs'); });
  afterAll(async () => { await fs?.dispose(); });

  test('on btrfs the btrfs-only driver is auto-picked over vfs', async () => {
    const root = join(fs.dir, 'cairn');
    const registry = registryOf(vfsLike(), btrfsLike(), eagerOwnFs());
    const driver = await open({ root, registry });
    expect(driver.name).toBe('btrfs');
    expect(await driver.status()).toEqual([['Backing Filesystem', 'btrfs']]);
    await driver.cleanup();
    const report = await probe({ root, registry });
    expect(report.find((r) => r.name === 'btrfs')).toMatchObject({ usable: true, chosen: true, backingFs: 'btrfs', prior: false });
  });
});

describeBackend('loop-xfs', loopFsMissing('xfs'), () => {
  test('on xfs with ftype=1 (d_type) the overlay-like driver is usable and chosen', async () => {
    const fs = await makeLoopFs('xfs', { mkfsArgs: ['-n', 'ftype=1'] });
    try {
      const report = await probe({ root: join(fs.dir, 'cairn'), registry: registryOf(vfsLike(), overlayLike()) });
      expect(report[0]).toMatchObject({ name: 'overlay2', usable: true, chosen: true, backingFs: 'xfs' });
    } finally {
      await fs.dispose();
    }
  });
});

// xfs ftype=0 cannot be mounted on this kernel (V4 format support is compiled out), so
// the filesystem without d_type is ext4 made without the filetype feature.
describeBackend('loop-ext4', loopFsMissing('ext4'), () => {
  test('without d_type the overlay-like driver is refused with ERR_INCOMPATIBLE_FS and vfs is chosen', async () => {
    const fs = await makeLoopFs('ext4', { sizeMiB: 32, mkfsArgs: ['-O', '^filetype'] });
    try {
      const root = join(fs.dir, 'cairn');
      const registry = registryOf(vfsLike(), overlayLike());
      const report = await probe({ root, registry });
      expect(report[0]).toMatchObject({ name: 'overlay2', usable: false, chosen: false, code: 'ERR_INCOMPATIBLE_FS' });
      expect(report[0]!.reason).toMatch(/d_type/);
      expect(report[1]).toMatchObject({ name: 'vfs', chosen: true });
      const err = await failure(openDriver({ root, registry, driver: 'overlay2' }));
      expect(err.code).toBe('ERR_INCOMPATIBLE_FS');
      const driver = await openDriver({ root, registry });
      expect(driver.name).toBe('vfs');
      await driver.cleanup();
    } finally {
      await fs.dispose();
    }
  });
});

describeBackend('loop-tmpfs', loopFsMissing('tmpfs'), () => {
  test('on tmpfs the report names the backing filesystem tmpfs for every driver', async () => {
    const fs = await makeLoopFs('tmpfs', { sizeMiB: 16 });
    try {
      const registry = registryOf(vfsLike(), overlayLike(), btrfsLike());
      const report = await probe({ root: join(fs.dir, 'cairn'), registry });
      expect(report.map((r) => r.backingFs)).toEqual(['tmpfs', 'tmpfs', 'tmpfs']);
      expect(report.map((r) => r.chosen)).toEqual([true, false, false]);
      expect(report[1]!.reason).toBe('backing filesystem is tmpfs, not btrfs');
    } finally {
      await fs.dispose();
    }
  });
});

test('isCairnError narrows registry failures by code', async () => {
  const err = await openDriver({ root: '/nonexistent-cairn-root', driver: 'nope', registry: new Registry() }).catch((e: unknown) => e);
  expect(isCairnError(err, 'ERR_DRIVER_NOT_FOUND')).toBe(true);
  expect((err as Error).message).toContain('(none)');
});
