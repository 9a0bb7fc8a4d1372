import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readMountInfo } from '@cairnfs/core';
import { describeBackend, startZfsFuse, zfsFuseMissing } from '@cairnfs/testkit';
import type { ZfsFuseFixture } from '@cairnfs/testkit';
import { zfsDriver } from '@cairnfs/zfs';
import { openZfs, zfsHarness } from './harness.js';

async function datasets(fixture: ZfsFuseFixture, under: string): Promise<string[]> {
  const out = await fixture.zfs('list', '-H', '-o', 'name', '-t', 'filesystem,snapshot', '-r', under);
  return out.split('\n').filter(Boolean).sort();
}

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect((err as { code?: string } | null)?.code).toBe(code);
}

describeBackend('zfs-fuse', zfsFuseMissing(), () => {
  let fixture: ZfsFuseFixture;
  beforeAll(async () => { fixture = await startZfsFuse(); }, 60_000);
  afterAll(async () => { await fixture?.dispose(); }, 60_000);

  async function withHarness(fn: (h: Awaited<ReturnType<typeof zfsHarness>>) => Promise<void>): Promise<void> {
    const h = await zfsHarness(fixture);
    try {
      await fn(h);
    } finally {
      await h.dispose();
    }
  }

  test('the home dataset is the default fsname, layers are <fsname>/<id>, children clones of <parent>@<child>', () => withHarness(async (h) => {
    const d = h.driver;
    expect(d.fsname).toBe(h.dataset);
    expect(d.mountMethod).toBe('zfs-mount'); // no zfs kernel filesystem here
    await d.create('base');
    await d.create('child', 'base');
    expect(await fixture.zfs('get', '-H', '-o', 'value', 'origin', `${h.dataset}/child`)).toBe(`${h.dataset}/base@child\n`);
    expect(await d.metadata('child')).toEqual({ Dataset: `${h.dataset}/child`, Mountpoint: join(h.root, 'zfs', 'graph', 'child') });
  }));

  test('a clone-of-clone chain keeps every level isolated, and is removed top-down taking every snapshot along', () => withHarness(async (h) => {
    const d = h.driver;
    let parent: string | null = null;
    for (let i = 0; i < 6; i++) {
      await d.createReadWrite(`c${i}`, parent);
      const root = await d.get(`c${i}`);
      await writeFile(join(root, 'level'), String(i));
      await writeFile(join(root, `only-${i}`), 'x');
      await d.put(`c${i}`);
      parent = `c${i}`;
    }
    for (let i = 0; i < 6; i++) {
      const root = await d.get(`c${i}`);
      expect(await readFile(join(root, 'level'), 'utf8')).toBe(String(i));
      for (let j = 0; j < 6; j++) {
        const seen = await readFile(join(root, `only-${j}`), 'utf8').then(() => true, () => false);
        expect({ i, j, seen }).toEqual({ i, j, seen: j <= i });
      }
      await d.put(`c${i}`);
    }
    await expectCode(d.remove('c2'), 'ERR_LAYER_IN_USE');
    for (let i = 5; i >= 0; i--) await d.remove(`c${i}`);
    expect(await datasets(fixture, h.dataset)).toEqual([h.dataset]);
  }));

  test('the origin snapshot is destroyed deferred: it stays while its clone lives and goes with it', () => withHarness(async (h) => {
    const d = h.driver;
    await d.create('p');
    await d.create('k', 'p');
    const snap = `${h.dataset}/p@k`;
    expect(await fixture.zfs('get', '-H', '-o', 'value', 'defer_destroy', snap)).toBe('on\n');
    // ZFS itself refuses to take the parent while the clone depends on its snapshot.
    await expect(fixture.zfs('destroy', '-r', `${h.dataset}/p`)).rejects.toThrow(/dependent clones/);
    await d.get('k'); // use the mount zfs-fuse made at clone time, then unmount it
    await d.put('k');
    const calls = d.commands.calls;
    await d.remove('k');
    expect(d.commands.calls - calls).toBe(1); // one destroy; the snapshot went by itself
    expect(await datasets(fixture, h.dataset)).toEqual([h.dataset, `${h.dataset}/p`]);
    await d.remove('p');
  }));

  test('storageOpt size becomes the dataset quota and a write past it fails with EDQUOT', () => withHarness(async (h) => {
    const d = h.driver;
    await d.createReadWrite('q', null, { storageOpt: { size: '64M' } });
    expect(await fixture.zfs('get', '-Hp', '-o', 'value', 'quota', `${h.dataset}/q`)).toBe(`${64 * 1024 * 1024}\n`);
    const root = await d.get('q');
    try {
      const err = await writeFile(join(root, 'big'), Buffer.alloc(128 << 20, 1)).then(() => null, (e: unknown) => e as NodeJS.ErrnoException);
      // Node 20's libuv has no name for EDQUOT: it reports errno -122 as "Unknown system error -122".
      expect(err?.errno).toBe(-122);
    } finally {
      await d.put('q');
    }
    await expectCode(d.createReadWrite('bad', null, { storageOpt: { size: 'lots' } }), 'ERR_INVALID_OPTION');
    await expectCode(d.createReadWrite('bad', null, { storageOpt: { inodes: '5' } }), 'ERR_INVALID_OPTION');
    expect(await d.exists('bad')).toBe(false);
  }));

  test('a failed clone is rolled back: no dataset and no snapshot left, the id stays free', () => withHarness(async (h) => {
    const d = h.driver;
    await d.create('base');
    // zfs-fuse mounts a fresh clone itself, and refuses a non-empty mount point: the clone fails after it was made.
    const blocker = join(h.root, 'zfs', 'graph', 'kid');
    await mkdir(blocker, { recursive: true });
    await writeFile(join(blocker, 'in-the-way'), 'x');
    const before = await datasets(fixture, h.dataset);
    await expect(d.create('kid', 'base')).rejects.toThrow(/kid/);
    expect(await d.exists('kid')).toBe(false);
    expect(await datasets(fixture, h.dataset)).toEqual(before);
    await rm(blocker, { recursive: true });
    await d.create('kid', 'base');
    expect(await d.exists('kid')).toBe(true);
  }));

  test('open destroys the snapshot an interrupted create left, and marks a clone origin that missed its deferred destroy', () => withHarness(async (h) => {
    const d = h.driver;
    await d.create('base');
    await d.cleanup();
    // A crash between snapshot and clone, and one between clone and "destroy -d".
    await fixture.zfs('snapshot', `${h.dataset}/base@lost`);
    await fixture.zfs('snapshot', `${h.dataset}/base@half`);
    await fixture.zfs('clone', '-o', 'cairn:kind=container', '-o', 'canmount=noauto', '-o', `mountpoint=${join(h.root, 'zfs', 'graph', 'half')}`,
      `${h.dataset}/base@half`, `${h.dataset}/half`);
    await fixture.zfs('unmount', `${h.dataset}/half`).catch(() => undefined);
    // Not ours: no cairn:kind, so never touched.
    await fixture.zfs('create', '-o', 'mountpoint=none', `${h.dataset}/foreign`);
    await fixture.zfs('snapshot', `${h.dataset}/foreign@keep`);
    const again = await h.reopen();
    expect(await again.exists('half')).toBe(true);
    expect(again.parentOf('half')).toBe('base');
    expect(await again.exists('foreign')).toBe(false);
    expect(await datasets(fixture, h.dataset)).toEqual([
      h.dataset, `${h.dataset}/base`, `${h.dataset}/base@half`, `${h.dataset}/foreign`, `${h.dataset}/foreign@keep`, `${h.dataset}/half`,
    ].sort());
    expect(await fixture.zfs('get', '-H', '-o', 'value', 'defer_destroy', `${h.dataset}/base@half`)).toBe('on\n');
    await expectCode(again.create('foreign'), 'ERR_LAYER_EXISTS');
  }));

  test('a driver restarted while its datasets are mounted adopts the mounts; one put unmounts each', () => withHarness(async (h) => {
    const home = join(h.root, 'zfs');
    await h.driver.cleanup();
    // A separate process creates and mounts two layers, then dies without cleanup (SIGKILL).
    const script = `
      const { zfsDriver } = await import(${JSON.stringify(new URL('../dist/index.js', import.meta.url).pathname)});
      const d = await zfsDriver.open({ root: ${JSON.stringify(h.root)}, home: ${JSON.stringify(home)}, options: {}, lockTimeoutMs: 0 });
      await d.createReadWrite('a'); await d.createReadWrite('b', 'a');
      const fs = await import('node:fs/promises');
      await fs.writeFile((await d.get('a')) + '/x', 'from a');
      await d.get('b');
      process.stdout.write('ready\\n');
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (b: Buffer) => { if (b.toString().includes('ready')) resolve(); });
      child.once('exit', (code) => reject(new Error(`child exited early with ${code}`)));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));

    const mountA = join(home, 'graph', 'a');
    const mounted = async () => (await readMountInfo()).filter((m) => m.fsType === 'fuse.zfs' && m.mountPoint.startsWith(join(home, 'graph'))).map((m) => m.source).sort();
    expect(await mounted()).toEqual([`${h.dataset}/a`, `${h.dataset}/b`]);
    const d = await h.reopen();
    expect(await d.get('a')).toBe(mountA); // counted: adopted once plus this get
    expect(await readFile(join(mountA, 'x'), 'utf8')).toBe('from a');
    await d.put('a');
    await expectCode(d.remove('a'), 'ERR_LAYER_IN_USE'); // b is its child
    await d.put('a'); // the adopted reference
    await d.put('b');
    expect(await mounted()).toEqual([]);
    await d.remove('b');
    await d.remove('a');
  }));

  test('zfs calls per operation stay within budget', () => withHarness(async (h) => {
    const d = h.driver;
    const measure = async (fn: () => Promise<unknown>) => {
      const before = d.commands.calls;
      await fn();
      return d.commands.calls - before;
    };
    const counts = {
      createBase: await measure(() => d.create('base')),
      getBase: await measure(() => d.get('base')),
      putBase: await measure(() => d.put('base')),
      createChild: await measure(() => d.createReadWrite('child', 'base')),
      getFreshClone: await measure(() => d.get('child')),
      putChild: await measure(() => d.put('child')),
      exists: await measure(() => d.exists('child')),
      metadata: await measure(() => d.metadata('child')),
      status: await measure(() => d.status()),
      removeChild: await measure(() => d.remove('child')),
      removeBase: await measure(() => d.remove('base')),
    };
     
    console.log(`zfs calls per operation: ${JSON.stringify(counts)}`);
    expect(counts).toEqual({
      createBase: 1, getBase: 1, putBase: 1, createChild: 3, getFreshClone: 0, putChild: 1,
      exists: 0, metadata: 0, status: 2, removeChild: 1, removeBase: 1,
    });
  }));

  test('status reports the pool, its health and the parent dataset in exact bytes', () => withHarness(async (h) => {
    const status = Object.fromEntries(await h.driver.status());
    expect(status).toEqual({
      'Zpool': fixture.pool,
      'Zpool Health': 'ONLINE',
      'Parent Dataset': h.dataset,
      'Space Used By Parent': expect.stringMatching(/^\d+$/),
      'Space Available': expect.stringMatching(/^\d+$/),
      'Parent Quota': 'no',
      'Compression': 'off',
    });
    await fixture.zfs('set', 'quota=1G', h.dataset);
    expect(Object.fromEntries(await h.driver.status())['Parent Quota']).toBe(String(1024 ** 3));
  }));

  test('probe: usable on a zfs-fuse dataset, ERR_INCOMPATIBLE_FS elsewhere, ERR_PREREQUISITES naming zfs without the tool', async () => {
    const { path: root } = await fixture.newFilesystem('probe');
    const ctx = (r: string) => ({ root: r, home: join(r, 'zfs'), options: {}, lockTimeoutMs: 0 });
    expect(await zfsDriver.probe(ctx(root))).toMatchObject({ usable: true, backingFs: 'zfs' });
    const plain = await mkdtemp(join(tmpdir(), 'cairn-zfs-probe-'));
    try {
      expect(await zfsDriver.probe(ctx(plain))).toMatchObject({ usable: false, code: 'ERR_INCOMPATIBLE_FS', reason: expect.stringMatching(/not zfs/) });
      const savedPath = process.env.PATH;
      process.env.PATH = plain; // no zfs here
      try {
        const r = await zfsDriver.probe(ctx(root));
        expect(r).toMatchObject({ usable: false, code: 'ERR_PREREQUISITES' });
        expect(r.reason).toMatch(/zfs command is not installed/);
      } finally {
        process.env.PATH = savedPath;
      }
      expect(await zfsDriver.probe({ ...ctx(root), options: { 'zfs.fsname': `${fixture.pool}/nope` } }))
        .toMatchObject({ usable: false, code: 'ERR_NOT_SUPPORTED', reason: expect.stringMatching(/does not exist/) });
      expect(await zfsDriver.hasLayers(ctx(root))).toBe(false);
    } finally {
      await rm(plain, { recursive: true, force: true });
      await fixture.zfs('destroy', '-r', `${fixture.pool}/probe`).catch(() => undefined);
    }
  });

  test('two drivers cannot hold one home', () => withHarness(async (h) => {
    await expectCode(openZfs(join(h.root, 'zfs')), 'ERR_LOCKED');
  }));
});
