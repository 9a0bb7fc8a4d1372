import { chmod, lchown, link, lstat, mkdir, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { constants as sysConstants, lsetxattrSync, lutimesNsSync, makedev, mknodSync } from '@cairnfs/sys';
import type { Change, ErrorCode, StorageDriver } from '@cairnfs/core';
import { errnoCode } from '@cairnfs/core';
import tarStream from 'tar-stream';
import { expectSameTree, snapshotTree } from './tree.js';

/** One driver instance on a fresh, private home, and how to open it again and to throw it away. */
export interface DriverHarness {
  driver: StorageDriver;
  /** Opens the same home again (after `driver.cleanup()`), as a restarted daemon would. */
  reopen(): Promise<StorageDriver>;
  /** Cleans up every driver opened here and deletes the home (unmounting what is mounted). */
  dispose(): Promise<void>;
}

export interface ConformanceOptions {
  /** The driver enforces `storageOpt.size`; when false it must refuse it with ERR_QUOTA_UNSUPPORTED. */
  quota?: boolean;
  /** Layers chained in the deep-stack scenario (default 20). */
  depth?: number;
  /**
   * Running as root of a user namespace (`cairn unshare`): device nodes cannot be made,
   * so a scenario's devices come back as the placeholders an unprivileged apply records
   * (and still leave as devices in diffs and exports).
   */
  rootless?: boolean;
}

/**
 * The graphdriver conformance suite (moby's graphtest scenarios plus containerd's
 * snapshotter testsuite, adapted to cairn's contract). Registers a `describe` block of
 * jest tests; every test gets a fresh home from `factory` and disposes it afterwards,
 * also when the test fails.
 */
export function driverConformanceSuite(name: string, factory: () => Promise<DriverHarness>, opts: ConformanceOptions = {}): void {
  async function withDriver(fn: (driver: StorageDriver, harness: DriverHarness) => Promise<void>): Promise<void> {
    const harness = await factory();
    try {
      await fn(harness.driver, harness);
    } finally {
      await harness.dispose();
    }
  }

  describe(`${name} driver conformance`, () => {
    test('an empty base layer is an empty 0755 directory owned by 0:0', () => withDriver(async (d) => {
      await d.create('empty');
      expect(await d.exists('empty')).toBe(true);
      const root = await d.get('empty');
      try {
        const st = await stat(root);
        expect(st.isDirectory()).toBe(true);
        expect(st.mode & 0o7777).toBe(0o755);
        expect([st.uid, st.gid]).toEqual([0, 0]);
        expect(await readdir(root)).toEqual([]);
      } finally {
        await d.put('empty');
      }
    }));

    test('under umask 0 a new layer root is still 0755 root:root and applied entries keep exactly their modes', () => withDriver(async (d) => {
      const saved = process.umask(0);
      try {
        await d.create('base');
        await d.applyDiff('base', null, Readable.from([await tarOf([
          { name: 'dir', type: 'directory', mode: 0o750 }, { name: 'dir/file', content: 'x', mode: 0o640 },
          { name: 'implied/parent/file', content: 'y', mode: 0o600 },
        ])]));
        await d.createReadWrite('top', 'base');
        for (const id of ['base', 'top']) {
          await withMounted(d, id, async (root) => {
            const st = await stat(root);
            expect([id, st.mode & 0o7777, st.uid, st.gid]).toEqual([id, 0o755, 0, 0]);
            expect((await stat(join(root, 'dir'))).mode & 0o7777).toBe(0o750);
            expect((await stat(join(root, 'dir/file'))).mode & 0o7777).toBe(0o640);
            expect((await stat(join(root, 'implied/parent/file'))).mode & 0o7777).toBe(0o600);
            // A directory the tar implies but does not list is made as a plain 0755 one, never world-writable.
            expect((await stat(join(root, 'implied'))).mode & 0o7777).toBe(0o755);
          });
        }
      } finally {
        process.umask(saved);
      }
    }));

    test('a base layer keeps a sticky 0705 dir owned 1:2 and a setuid 0222 file, through get/put and through a child', () => withDriver(async (d) => {
      await d.createReadWrite('base');
      await withMounted(d, 'base', writeBase);
      await withMounted(d, 'base', verifyBase);
      await d.create('snap', 'base');
      await withMounted(d, 'snap', verifyBase);
      const [a, b] = [await withMounted(d, 'base', snapshotTree), await withMounted(d, 'snap', snapshotTree)];
      expectSameTree(b, a);
    }));

    test('a child sees its parent files and its writes never reach the parent', () => withDriver(async (d) => {
      await d.createReadWrite('base');
      await withMounted(d, 'base', writeBase);
      const before = await withMounted(d, 'base', snapshotTree);
      await d.createReadWrite('child', 'base');
      await withMounted(d, 'child', async (root) => {
        expect(await readFile(join(root, 'a file'), 'utf8')).toBe('Some data');
        await writeFile(join(root, 'a file'), 'changed in the child');
        await writeFile(join(root, 'child only'), 'x');
        await rm(join(root, 'a subdir'), { recursive: true });
      });
      await withMounted(d, 'base', async (root) => expectSameTree(await snapshotTree(root), before));
      await withMounted(d, 'child', async (root) => {
        expect((await readdir(root)).sort()).toEqual(['a file', 'child only']);
      });
    }));

    test(`${opts.depth ?? 20} chained layers each adding a file are all visible at the top, and only below it`, () => withDriver(async (d) => {
      const depth = opts.depth ?? 20;
      let parent: string | null = null;
      for (let i = 0; i < depth; i++) {
        const id = `layer-${i}`;
        await d.create(id, parent);
        await withMounted(d, id, (root) => writeFile(join(root, `file-${i}`), `content ${i}`));
        parent = id;
      }
      await withMounted(d, `layer-${depth - 1}`, async (root) => {
        for (let i = 0; i < depth; i++) expect(await readFile(join(root, `file-${i}`), 'utf8')).toBe(`content ${i}`);
      });
      await withMounted(d, 'layer-4', async (root) => {
        expect((await readdir(root)).sort()).toEqual(['file-0', 'file-1', 'file-2', 'file-3', 'file-4']);
      });
    }));

    test('diff then applyDiff into a new layer reproduces the tree exactly: modes, owners, ns times, xattrs, hardlinks, devices, symlinks', () => withDriver(async (d) => {
      await d.createReadWrite('src');
      await withMounted(d, 'src', (root) => writeRichTree(root, { rootless: opts.rootless ?? false }));
      if (opts.rootless) {
        // Devices cannot be made here: they arrive by a tar and are recorded as placeholders.
        await d.applyDiff('src', null, Readable.from([await packedDevices()]));
      }
      const tar = await collect(await d.diff('src', null));
      if (opts.rootless) {
        const entries = await tarEntries(tar);
        expect(entries.filter((e) => e.name.startsWith('dev/')).map((e) => `${e.name} ${e.type}`).sort())
          .toEqual(['dev/ directory', 'dev/fifo fifo', 'dev/loop9 block-device', 'dev/null character-device']);
      }
      await d.create('dst');
      const applied = await d.applyDiff('dst', null, Readable.from([tar]));
      expect(applied).toBe(RICH_TREE_BYTES);
      const [a, b] = [await withMounted(d, 'src', snapshotTree), await withMounted(d, 'dst', snapshotTree)];
      expectSameTree(b, a);
      // The layer's own parent is the default: a base layer's diff is the whole tree either way.
      expect((await tarEntries(await collect(await d.diff('src')))).map((e) => e.name))
        .toEqual((await tarEntries(tar)).map((e) => e.name));
    }));

    test('deleted files and dirs become whiteouts, stay hidden in the child and every later layer, and a recreated dir shows no old entries', () => withDriver(async (d) => {
      await d.createReadWrite('base');
      await withMounted(d, 'base', async (root) => {
        await writeFile(join(root, 'keep'), 'k');
        await writeFile(join(root, 'gone-file'), 'g');
        await mkdir(join(root, 'gone-dir', 'sub'), { recursive: true });
        await writeFile(join(root, 'gone-dir', 'sub', 'x'), 'x');
        await mkdir(join(root, 're'));
        await writeFile(join(root, 're', 'old'), 'old');
      });
      await d.createReadWrite('child', 'base');
      await withMounted(d, 'child', async (root) => {
        await rm(join(root, 'gone-file'));
        await rm(join(root, 'gone-dir'), { recursive: true });
        await rm(join(root, 're'), { recursive: true });
        await mkdir(join(root, 're'));
        await writeFile(join(root, 're', 'new'), 'new');
      });
      const childTar = await collect(await d.diff('child'));
      const names = (await tarEntries(childTar)).map((e) => e.name.replace(/^\.?\//, ''));
      expect(names).toContain('.wh.gone-file');
      expect(names).toContain('.wh.gone-dir');
      expect(names.some((n) => n.startsWith('gone-dir/'))).toBe(false);
      expect(names).toContain('re/new');

      await d.create('base2');
      await d.applyDiff('base2', null, Readable.from([await collect(await d.diff('base'))]));
      await d.create('child2', 'base2');
      await d.applyDiff('child2', 'base2', Readable.from([childTar]));
      await d.createReadWrite('grandchild', 'child2');
      for (const id of ['child2', 'grandchild']) {
        await withMounted(d, id, async (root) => {
          expect((await readdir(root)).sort()).toEqual(['keep', 're']);
          expect(await readdir(join(root, 're'))).toEqual(['new']);
        });
      }
      const [want, got] = [await withMounted(d, 'child', snapshotTree), await withMounted(d, 'child2', snapshotTree)];
      expectSameTree(got, want);
    }));

    test('a layer whiting out dir and then re-creating it (with or without a dir entry) shows only its own dir content', () => withDriver(async (d) => {
      // OCI: a whiteout hides the lower layers' entry only, never what the same layer adds.
      await d.create('base');
      await d.applyDiff('base', null, Readable.from([await tarOf([
        { name: 'dir/', type: 'directory' },
        { name: 'dir/f', content: 'lower' },
        { name: 'dir2/', type: 'directory' },
        { name: 'dir2/f', content: 'lower' },
      ])]));
      await d.create('child', 'base');
      await d.applyDiff('child', 'base', Readable.from([await tarOf([
        { name: '.wh.dir' },
        { name: 'dir/', type: 'directory' },
        { name: 'dir/g', content: 'upper' },
        { name: '.wh.dir2' },
        { name: 'dir2/g', content: 'upper' },
      ])]));
      await d.createReadWrite('top', 'child');
      for (const id of ['child', 'top']) {
        await withMounted(d, id, async (root) => {
          expect((await readdir(root)).sort()).toEqual(['dir', 'dir2']);
          expect(await readdir(join(root, 'dir'))).toEqual(['g']);
          expect(await readdir(join(root, 'dir2'))).toEqual(['g']);
          expect(await readFile(join(root, 'dir2', 'g'), 'utf8')).toBe('upper');
        });
      }
    }));

    test('changes are exact: adds, deletes, chown-only and same-size same-second edits, with parents reported modified', () => withDriver(async (d) => {
      await d.createReadWrite('base');
      const mtime = 1_700_000_000_000_000_100n;
      await withMounted(d, 'base', async (root) => {
        await mkdir(join(root, 'a'));
        await writeFile(join(root, 'a', 'f1'), 'hello');
        lutimesNsSync(join(root, 'a', 'f1'), mtime, mtime);
        await writeFile(join(root, 'a', 'untouched'), 'same');
        await mkdir(join(root, 'b'));
        await writeFile(join(root, 'b', 'x'), 'x');
        await writeFile(join(root, 'c'), 'c');
        await mkdir(join(root, 'd', 'deep'), { recursive: true });
        await writeFile(join(root, 'd', 'deep', 'y'), 'y');
      });
      await d.createReadWrite('child', 'base');
      await withMounted(d, 'child', async (root) => {
        await writeFile(join(root, 'a', 'f1'), 'HELLO'); // same size…
        lutimesNsSync(join(root, 'a', 'f1'), mtime + 1n, mtime + 1n); // …same second
        await lchown(join(root, 'b', 'x'), 5, 0);
        await rm(join(root, 'c'));
        await writeFile(join(root, 'd', 'deep', 'z'), 'z');
      });
      const expected: Change[] = [
        { path: '/a', kind: 'modify' },
        { path: '/a/f1', kind: 'modify' },
        { path: '/b', kind: 'modify' },
        { path: '/b/x', kind: 'modify' },
        { path: '/c', kind: 'delete' },
        { path: '/d', kind: 'modify' },
        { path: '/d/deep', kind: 'modify' },
        { path: '/d/deep/z', kind: 'add' },
      ];
      expect(await d.changes('child')).toEqual(expected);
      expect(await d.changes('child', 'base')).toEqual(expected);
      const all = await d.changes('base', null);
      expect(all.map((c) => c.path).sort()).toEqual(['/a', '/a/f1', '/a/untouched', '/b', '/b/x', '/c', '/d', '/d/deep', '/d/deep/y']);
      expect(all.every((c) => c.kind === 'add')).toBe(true);
    }));

    test('diffSize counts the bytes of added and modified files, hardlinks once', () => withDriver(async (d) => {
      await d.createReadWrite('base');
      await withMounted(d, 'base', (root) => writeFile(join(root, 'f'), Buffer.alloc(1000, 1)));
      await d.createReadWrite('child', 'base');
      await withMounted(d, 'child', async (root) => {
        await writeFile(join(root, 'f'), Buffer.alloc(2000, 2));
        await writeFile(join(root, 'g'), Buffer.alloc(300, 3));
        await link(join(root, 'g'), join(root, 'g2'));
      });
      expect(await d.diffSize('base', null)).toBe(1000);
      expect(await d.diffSize('child')).toBe(2300);
    }));

    test('get twice returns the same path and needs two puts; one more put is ERR_NOT_MOUNTED', () => withDriver(async (d) => {
      await d.createReadWrite('l');
      const a = await d.get('l');
      const b = await d.get('l');
      expect(b).toBe(a);
      await d.put('l');
      await writeFile(join(a, 'still-there'), 'y'); // still mounted after one put
      await d.put('l');
      await expectCode(d.put('l'), 'ERR_NOT_MOUNTED');
    }));

    test('16 concurrent gets return one path; 16 concurrent puts release it so remove succeeds', () => withDriver(async (d) => {
      await d.createReadWrite('l');
      const paths = await Promise.all(Array.from({ length: 16 }, () => d.get('l')));
      expect(new Set(paths).size).toBe(1);
      await expectCode(d.remove('l'), 'ERR_LAYER_IN_USE');
      await Promise.all(Array.from({ length: 16 }, () => d.put('l')));
      await expectCode(d.put('l'), 'ERR_NOT_MOUNTED');
      await d.remove('l');
      expect(await d.exists('l')).toBe(false);
    }));

    test('put without get is ERR_NOT_MOUNTED', () => withDriver(async (d) => {
      await d.create('l');
      await expectCode(d.put('l'), 'ERR_NOT_MOUNTED');
      await expectCode(d.put('never-created'), 'ERR_NOT_MOUNTED');
    }));

    test('remove of a mounted layer is ERR_LAYER_IN_USE and deletes nothing; after put it goes', () => withDriver(async (d) => {
      await d.createReadWrite('l');
      const root = await d.get('l');
      await writeFile(join(root, 'data'), 'd');
      await expectCode(d.remove('l'), 'ERR_LAYER_IN_USE');
      expect(await d.exists('l')).toBe(true);
      expect(await readFile(join(root, 'data'), 'utf8')).toBe('d');
      await d.put('l');
      await d.remove('l');
      expect(await d.exists('l')).toBe(false);
    }));

    test('remove of a parent with children is ERR_LAYER_IN_USE and deletes nothing', () => withDriver(async (d) => {
      await d.createReadWrite('parent');
      await withMounted(d, 'parent', (root) => writeFile(join(root, 'p'), 'p'));
      await d.create('child', 'parent');
      await expectCode(d.remove('parent'), 'ERR_LAYER_IN_USE');
      expect(await d.exists('parent')).toBe(true);
      await withMounted(d, 'parent', async (root) => expect(await readFile(join(root, 'p'), 'utf8')).toBe('p'));
      await withMounted(d, 'child', async (root) => expect(await readFile(join(root, 'p'), 'utf8')).toBe('p'));
      await d.remove('child');
      await d.remove('parent');
      expect(await d.exists('parent')).toBe(false);
    }));

    test('create of an existing id is ERR_LAYER_EXISTS and leaves the layer alone', () => withDriver(async (d) => {
      await d.createReadWrite('l');
      await withMounted(d, 'l', (root) => writeFile(join(root, 'data'), 'd'));
      await expectCode(d.create('l'), 'ERR_LAYER_EXISTS');
      await expectCode(d.createReadWrite('l'), 'ERR_LAYER_EXISTS');
      await withMounted(d, 'l', async (root) => expect(await readdir(root)).toEqual(['data']));
    }));

    test('create on a missing parent is ERR_PARENT_NOT_FOUND and leaves no layer', () => withDriver(async (d) => {
      await expectCode(d.create('orphan', 'nope'), 'ERR_PARENT_NOT_FOUND');
      await expectCode(d.createReadWrite('orphan', 'nope'), 'ERR_PARENT_NOT_FOUND');
      expect(await d.exists('orphan')).toBe(false);
      await d.create('orphan'); // the id is free
    }));

    test('invalid ids are ERR_INVALID_ID in every method before any file is touched', () => withDriver(async (d) => {
      await d.createReadWrite('ok');
      const before = await snapshotTree(d.home);
      const bad = ['', '.hidden', '-dash', 'a/b', '../escape', '..', 'a b', 'x'.repeat(129), 'é'];
      const tar = await emptyTar();
      for (const id of bad) {
        const calls: Array<[string, () => Promise<unknown>]> = [
          ['create', () => d.create(id)],
          ['createReadWrite', () => d.createReadWrite(id)],
          ['create with bad parent', () => d.create('fresh', id === '' ? '../x' : id)],
          ['exists', () => d.exists(id)],
          ['remove', () => d.remove(id)],
          ['get', () => d.get(id)],
          ['put', () => d.put(id)],
          ['diff', () => d.diff(id)],
          ['diff with bad parent', () => d.diff('ok', id === '' ? '../x' : id)],
          ['changes', () => d.changes(id)],
          ['applyDiff', () => d.applyDiff(id, null, Readable.from([tar]))],
          ['diffSize', () => d.diffSize(id)],
          ['metadata', () => d.metadata(id)],
        ];
        for (const [what, call] of calls) {
          const err = await call().then(() => null, (e: unknown) => e);
          expect({ what, id, code: (err as { code?: string } | null)?.code }).toEqual({ what, id, code: 'ERR_INVALID_ID' });
        }
      }
      expectSameTree(await snapshotTree(d.home), before, { ignoreDirMtimes: true });
      expect(await d.exists('fresh')).toBe(false);
    }));

    test('exists is false for unknown and removed layers; removing an unknown layer is a no-op', () => withDriver(async (d) => {
      expect(await d.exists('unknown')).toBe(false);
      await d.create('l');
      await d.remove('l');
      expect(await d.exists('l')).toBe(false);
      await d.remove('unknown');
      await expectCode(d.get('l'), 'ERR_LAYER_NOT_FOUND');
    }));

    test('a diff stream destroyed before its end puts its layers back', () => withDriver(async (d) => {
      await d.createReadWrite('base');
      await withMounted(d, 'base', (root) => writeFile(join(root, 'big'), Buffer.alloc(4 << 20, 7)));
      await d.createReadWrite('child', 'base');
      await withMounted(d, 'child', (root) => writeFile(join(root, 'big2'), Buffer.alloc(4 << 20, 8)));
      const stream = await d.diff('child');
      await new Promise<void>((resolve) => stream.once('readable', () => resolve()));
      const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
      stream.destroy();
      await closed;
      await new Promise((r) => setTimeout(r, 50)); // the put runs right after 'close'
      await d.remove('child'); // ERR_LAYER_IN_USE if the diff leaked a mount
      await d.remove('base');
    }));

    test('a layer made with create is read-only once its applyDiff is done', () => withDriver(async (d) => {
      await d.create('image');
      await d.applyDiff('image', null, Readable.from([await tarOf([{ name: 'hello', content: 'world' }])]));
      await withMounted(d, 'image', async (root) => {
        expect(await readFile(join(root, 'hello'), 'utf8')).toBe('world');
        const err = await writeFile(join(root, 'new'), 'x').then(() => null, (e: unknown) => e);
        expect(['EROFS', 'EACCES', 'EPERM']).toContain((err as { code?: string } | null)?.code);
      });
      await d.createReadWrite('container', 'image');
      await withMounted(d, 'container', (root) => writeFile(join(root, 'new'), 'x'));
    }));

    test('cleanup can be called twice', () => withDriver(async (d) => {
      await d.create('l');
      await d.get('l');
      await d.cleanup();
      await d.cleanup();
    }));

    test('after cleanup every method is ERR_NOT_SUPPORTED and a reopen sees the layers again', () => withDriver(async (d, harness) => {
      await d.create('l');
      await d.cleanup();
      const empty = () => Readable.from([Buffer.alloc(1024)]);
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['create', () => d.create('m')], ['createReadWrite', () => d.createReadWrite('m', 'l')], ['exists', () => d.exists('l')],
        ['remove', () => d.remove('l')], ['get', () => d.get('l')], ['put', () => d.put('l')], ['diff', () => d.diff('l')],
        ['changes', () => d.changes('l')], ['applyDiff', () => d.applyDiff('l', null, empty())], ['diffSize', () => d.diffSize('l')],
        ['status', () => d.status()], ['metadata', () => d.metadata('l')],
      ];
      for (const [method, call] of calls) {
        const code = await call().then(() => 'resolved', (e: unknown) => (e as { code?: string }).code ?? String(e));
        expect([method, code]).toEqual([method, 'ERR_NOT_SUPPORTED']);
      }
      await d.cleanup();
      expect(await (await harness.reopen()).exists('l')).toBe(true);
    }));

    test('a reopened home has the same layers, contents and parent links', () => withDriver(async (d, harness) => {
      await d.createReadWrite('base');
      await withMounted(d, 'base', writeBase);
      await d.createReadWrite('child', 'base');
      await withMounted(d, 'child', (root) => writeFile(join(root, 'c'), 'c'));
      const want = await withMounted(d, 'child', snapshotTree);
      await d.get('child'); // left mounted: cleanup must take care of it
      await d.cleanup();
      const again = await harness.reopen();
      expect(await again.exists('base')).toBe(true);
      expect(await again.exists('child')).toBe(true);
      await withMounted(again, 'child', async (root) => expectSameTree(await snapshotTree(root), want));
      await withMounted(again, 'base', verifyBase);
      expect(await again.changes('child')).toEqual([{ path: '/c', kind: 'add' }]);
      await expectCode(again.remove('base'), 'ERR_LAYER_IN_USE');
      await again.remove('child');
      await again.remove('base');
    }));

    if (opts.quota) {
      test('storageOpt size is enforced: writing past it fails with EDQUOT/ENOSPC', () => withDriver(async (d) => {
        await d.createReadWrite('q', null, { storageOpt: { size: '16M' } });
        await withMounted(d, 'q', async (root) => {
          const err = await writeFile(join(root, 'big'), Buffer.alloc(32 << 20, 1)).then(() => null, (e: unknown) => e);
          // errnoCode: Node 20 reports EDQUOT (122) as 'UNKNOWN', errno -122.
          expect(['EDQUOT', 'ENOSPC']).toContain(errnoCode(err));
        });
      }));
    } else {
      test('storageOpt size is refused with ERR_QUOTA_UNSUPPORTED and leaves no layer', () => withDriver(async (d) => {
        await expectCode(d.createReadWrite('q', null, { storageOpt: { size: '16M' } }), 'ERR_QUOTA_UNSUPPORTED');
        expect(await d.exists('q')).toBe(false);
      }));
    }
  });
}

/** Runs `fn` on the layer's root between a get and a put (the put also when `fn` fails). */
export async function withMounted<T>(d: StorageDriver, id: string, fn: (root: string) => Promise<T>): Promise<T> {
  const root = await d.get(id);
  try {
    return await fn(root);
  } finally {
    await d.put(id);
  }
}

/** Expects `p` to reject with a CairnError of `code`. */
export async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect({ name: (err as Error | null)?.name, code: (err as { code?: string } | null)?.code })
    .toEqual({ name: 'CairnError', code });
}

/** moby graphtest's base: a sticky 0705 dir owned 1:2 and a setuid 0222 file owned 0:0. */
export async function writeBase(root: string): Promise<void> {
  await mkdir(join(root, 'a subdir'));
  await chmod(join(root, 'a subdir'), 0o1705);
  await lchown(join(root, 'a subdir'), 1, 2);
  await writeFile(join(root, 'a file'), 'Some data');
  await chmod(join(root, 'a file'), 0o4222);
}

export async function verifyBase(root: string): Promise<void> {
  const dir = await lstat(join(root, 'a subdir'));
  expect({ dir: dir.isDirectory(), mode: (dir.mode & 0o7777).toString(8), uid: dir.uid, gid: dir.gid })
    .toEqual({ dir: true, mode: '1705', uid: 1, gid: 2 });
  const file = await lstat(join(root, 'a file'));
  expect({ file: file.isFile(), mode: (file.mode & 0o7777).toString(8), uid: file.uid, gid: file.gid })
    .toEqual({ file: true, mode: '4222', uid: 0, gid: 0 });
  expect(await readFile(join(root, 'a file'), 'utf8')).toBe('Some data');
  expect((await readdir(root)).sort()).toEqual(['a file', 'a subdir']);
}

// A file capability granting CAP_NET_RAW (VFS_CAP_REVISION_2, effective): binary, must survive intact.
const CAPABILITY = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const LONG_NAME = `${'long-directory-name-'.repeat(4)}/${'very-long-file-name-'.repeat(8)}`;
/** Regular-file bytes in writeRichTree (the hardlinked file once). */
export const RICH_TREE_BYTES = 5 + 11 + 4096 + 0 + 3;

/** Every kind of entry a layer can hold, with owners, modes, ns times and xattrs that must round-trip. */
/** Two device nodes as a layer tar (the rootless scenario's devices: they cannot be made with mknod there). */
async function packedDevices(): Promise<Buffer> {
  const pack = tarStream.pack();
  const out = collect(pack as unknown as AsyncIterable<Uint8Array>);
  pack.entry({ name: 'dev/null', type: 'character-device', mode: 0o666, devmajor: 1, devminor: 3, uid: 0, gid: 0, mtime: new Date(1_600_000_000_000) });
  pack.entry({ name: 'dev/loop9', type: 'block-device', mode: 0o660, devmajor: 7, devminor: 9, uid: 0, gid: 6, mtime: new Date(1_600_000_000_000) });
  pack.finalize();
  return out;
}

/**
 * `rootless`: the tree a root of a user namespace can make: owners inside a 65536-id range,
 * no trusted.* xattr, no device nodes (the scenario brings those by tar).
 */
export async function writeRichTree(root: string, opts: { rootless?: boolean } = {}): Promise<void> {
  const at = (p: string) => join(root, p);
  const rootless = opts.rootless ?? false;
  const times = (p: string, ns: bigint) => lutimesNsSync(at(p), ns, ns);
  await mkdir(at('etc/conf.d'), { recursive: true });
  await writeFile(at('etc/hosts'), 'hosts');
  await chmod(at('etc/hosts'), 0o644);
  await writeFile(at('etc/conf.d/secret'), 'secret data');
  await lchown(at('etc/conf.d/secret'), rootless ? 60_000 : 3_000_000, rootless ? 60_001 : 3_000_001);
  await chmod(at('etc/conf.d/secret'), 0o2640);
  lsetxattrSync(at('etc/conf.d/secret'), 'user.note', Buffer.from('hello'));
  if (!rootless) lsetxattrSync(at('etc/conf.d/secret'), 'trusted.binary', Buffer.from([0, 1, 2, 255, 254]));
  await mkdir(at('bin'));
  await writeFile(at('bin/ping'), Buffer.alloc(4096, 0x7f));
  await chmod(at('bin/ping'), 0o4755);
  lsetxattrSync(at('bin/ping'), 'security.capability', CAPABILITY);
  await link(at('bin/ping'), at('bin/ping-hardlink'));
  await writeFile(at('empty'), '');
  await mkdir(at('dev'));
  if (!rootless) {
    mknodSync(at('dev/null'), sysConstants.S_IFCHR | 0o666, 1, 3);
    await chmod(at('dev/null'), 0o666); // mknod applies the umask
    mknodSync(at('dev/loop9'), sysConstants.S_IFBLK | 0o660, 7, 9);
    expect(makedev(1, 3)).toBe(Number((await lstat(at('dev/null'), { bigint: true })).rdev));
  }
  mknodSync(at('dev/fifo'), sysConstants.S_IFIFO | 0o600, 0, 0);
  await symlink('../etc/hosts', at('bin/relative-link'));
  await symlink('/etc/hosts', at('bin/absolute-link'));
  await symlink('does/not/exist', at('bin/dangling'));
  await lchown(at('bin/dangling'), 7, 8);
  await mkdir(at(LONG_NAME.split('/')[0]!));
  await writeFile(at(LONG_NAME), 'abc');
  await mkdir(at('sticky'));
  await chmod(at('sticky'), 0o1777);
  await lchown(at('sticky'), 1000, 1000);
  lsetxattrSync(at('sticky'), 'user.dir-note', Buffer.from('on a dir'));
  // Times last, deepest first, so creating children does not move them again.
  times('etc/conf.d/secret', 1_234_567_890_123_456_789n);
  times('etc/hosts', 1_600_000_000_000_000_001n);
  times('bin/ping', 1_500_000_000_999_999_999n);
  times('bin/dangling', 1_400_000_000_500_000_000n);
  times('etc/conf.d', 1_300_000_000_000_000_007n);
  times('etc', 1_300_000_000_000_000_009n);
  times('sticky', 1_200_000_000_000_000_003n);
}

/** Reads a stream to one buffer. */
export async function collect(stream: Readable | AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

export interface TarEntrySummary { name: string; type: string; size: number }

/** The entries of a tar, in order. */
export async function tarEntries(tar: Buffer): Promise<TarEntrySummary[]> {
  const extract = tarStream.extract();
  const out: TarEntrySummary[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      out.push({ name: entry.header.name, type: entry.header.type ?? 'file', size: entry.header.size ?? 0 });
      entry.resume();
    }
  })();
  extract.end(tar);
  await done;
  return out;
}

export interface TarFixtureEntry {
  name: string;
  content?: string | Buffer;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  mtime?: Date;
}

/** Builds a tar (plain, or an OCI changeset when names carry `.wh.`) in memory. */
export async function tarOf(entries: TarFixtureEntry[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const out = collect(pack as unknown as AsyncIterable<Uint8Array>);
  for (const e of entries) {
    const content = e.content === undefined ? undefined : Buffer.from(e.content);
    pack.entry({
      name: e.name,
      type: e.type ?? 'file',
      mode: e.mode ?? (e.type === 'directory' ? 0o755 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime: e.mtime ?? new Date(1_600_000_000_000),
      ...(e.linkname === undefined ? {} : { linkname: e.linkname }),
      size: content?.length ?? 0,
    }, content ?? Buffer.alloc(0));
  }
  pack.finalize();
  return out;
}

async function emptyTar(): Promise<Buffer> {
  return tarOf([]);
}
