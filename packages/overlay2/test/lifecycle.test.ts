import { existsSync } from 'node:fs';
import { lstat, mkdir, readFile, readdir, readlink, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { CairnError, STAGING_DIR } from '@cairnfs/core';
import { describeBackend, tarOf } from '@cairnfs/testkit';
import type { Overlay2Driver } from '@cairnfs/overlay2';
import { makeHome, overlayMissing, overlayMountsUnder } from './helpers.js';
import type { Home } from './helpers.js';

const missing = await overlayMissing();

async function mode(path: string): Promise<number> {
  return (await lstat(path)).mode & 0o7777;
}

async function emptyTar(): Promise<Readable> {
  return Readable.from([await tarOf([{ name: 'etc/', type: 'directory' }])]);
}

async function code(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    if (err instanceof CairnError) return err.code;
    return `not a CairnError: ${String(err)}`;
  }
}

describeBackend('overlayfs', missing, () => {
  let h: Home;
  let d: Overlay2Driver;
  beforeEach(async () => {
    h = await makeHome();
    d = await h.open();
  });
  afterEach(async () => {
    await h.dispose();
  });

  test('create writes Docker layout: modes, 26-char link, lower nearest-first, work only above base, committed in parents', async () => {
    await d.create('base');
    await d.create('mid', 'base');
    await d.createReadWrite('top', 'mid');
    expect(await mode(h.home)).toBe(0o710);
    const short = async (id: string) => readFile(join(h.home, id, 'link'), 'utf8');
    for (const id of ['base', 'mid', 'top']) {
      expect(await mode(join(h.home, id))).toBe(0o710);
      expect(await mode(join(h.home, id, 'diff'))).toBe(0o755);
      expect(await mode(join(h.home, id, 'link'))).toBe(0o644);
      expect(await short(id)).toMatch(/^[A-Z2-7]{26}$/);
      expect(await readlink(join(h.home, 'l', await short(id)))).toBe(`../${id}/diff`);
    }
    expect(await readdir(join(h.home, 'base')).then((n) => n.sort())).toEqual(['committed', 'diff', 'link']);
    expect(await readdir(join(h.home, 'top')).then((n) => n.sort())).toEqual(['diff', 'link', 'lower', 'work']);
    expect(await readFile(join(h.home, 'top', 'lower'), 'utf8')).toBe(`l/${await short('mid')}:l/${await short('base')}`);
    expect(await readFile(join(h.home, 'mid', 'lower'), 'utf8')).toBe(`l/${await short('base')}`);
    expect(await mode(join(h.home, 'top', 'lower'))).toBe(0o644);
    expect(await mode(join(h.home, 'top', 'work'))).toBe(0o700);
    expect(await mode(join(h.home, 'mid', 'committed'))).toBe(0o600);
    expect((await stat(join(h.home, 'mid', 'committed'))).size).toBe(0);
    expect(existsSync(join(h.home, 'top', 'committed'))).toBe(false);
    // Nothing left in staging once a create is done.
    expect(await readdir(join(h.home, STAGING_DIR)).catch(() => [])).toEqual([]);
  });

  test('get of a base layer returns its diff dir without mounting; put is then a no-op count', async () => {
    await d.createReadWrite('base');
    const root = await d.get('base');
    expect(root).toBe(join(h.home, 'base', 'diff'));
    expect(await overlayMountsUnder(h.root)).toHaveLength(0);
    await d.put('base');
    expect(await code(d.put('base'))).toBe('ERR_NOT_MOUNTED');
  });

  test('get mounts overlay on merged/ with index=off and absolute l/ lowers; the last put unmounts and removes merged/', async () => {
    await d.createReadWrite('base');
    await writeFile(join(await d.get('base'), 'f'), 'base');
    await d.put('base');
    await d.createReadWrite('c', 'base');
    const root = await d.get('c');
    expect(root).toBe(join(h.home, 'c', 'merged'));
    expect(await readFile(join(root, 'f'), 'utf8')).toBe('base');
    await writeFile(join(root, 'g'), 'child');
    expect(await readFile(join(h.home, 'c', 'diff', 'g'), 'utf8')).toBe('child');
    expect(existsSync(join(h.home, 'base', 'diff', 'g'))).toBe(false);
    const mounts = await overlayMountsUnder(h.root);
    expect(mounts).toHaveLength(1);
    const baseShort = await readFile(join(h.home, 'base', 'link'), 'utf8');
    // The kernel shows index=off only when it differs from the module default, so check what was passed.
    const spec = await d.mountSpecFor('c');
    expect(spec!.options[0]).toEqual(existsSync('/sys/module/overlay/parameters/index') ? ['index', 'off'] : expect.anything());
    expect(mounts[0]!.options).toContain(`lowerdir=${join(h.home, 'l', baseShort)}`);
    expect(mounts[0]!.options).toContain(`upperdir=${join(h.home, 'c', 'diff')}`);
    expect(await d.get('c')).toBe(root);
    expect(await d.mountCount('c')).toBe(2);
    await d.put('c');
    expect(await overlayMountsUnder(h.root)).toHaveLength(1);
    await d.put('c');
    expect(await overlayMountsUnder(h.root)).toHaveLength(0);
    expect(existsSync(root)).toBe(false);
  });

  test('a parent whose link file was deleted: a create on it rewrites the file from its l/ link (under the write lock create holds, without asking for it again) and mounts', async () => {
    await d.create('base');
    const short = await readFile(join(h.home, 'base', 'link'), 'utf8');
    await unlink(join(h.home, 'base', 'link'));
    // create holds its locks without frames: a nested request for the store lock would wait on itself (a hang, not an error).
    await d.createReadWrite('child', 'base');
    expect(await readFile(join(h.home, 'base', 'link'), 'utf8')).toBe(short);
    expect(await readFile(join(h.home, 'child', 'lower'), 'utf8')).toBe(`l/${short}`);
    const root = await d.get('child');
    await writeFile(join(root, 'x'), 'y');
    await d.put('child');
    await d.remove('child');
    expect(existsSync(join(h.home, 'child'))).toBe(false);
  });

  test('a layer made with create mounts read-only (no upper) once applied; writes fail with EROFS', async () => {
    await d.create('base');
    await d.create('img', 'base');
    await d.applyDiff('img', 'base', await emptyTar());
    const root = await d.get('img');
    try {
      await expect(writeFile(join(root, 'x'), 'no')).rejects.toMatchObject({ code: 'EROFS' });
      const mounts = await overlayMountsUnder(h.root);
      expect(mounts[0]!.options).not.toContain('upperdir=');
      expect(mounts[0]!.mountOptions.split(',')).toContain('ro');
    } finally {
      await d.put('img');
    }
  });

  test('the read-only marking of create layers survives a reopen; a base image layer is bound read-only', async () => {
    await d.create('base');
    await d.applyDiff('base', null, await emptyTar());
    await d.create('img', 'base');
    await d.applyDiff('img', 'base', await emptyTar());
    await d.cleanup();
    d = await h.open();
    const baseRoot = await d.get('base');
    try {
      expect(baseRoot).toBe(join(h.home, 'base', 'merged'));
      await expect(writeFile(join(baseRoot, 'x'), 'no')).rejects.toMatchObject({ code: 'EROFS' });
    } finally {
      await d.put('base');
    }
    await d.cleanup();
    d = await h.open();
    const root = await d.get('img');
    try {
      await expect(writeFile(join(root, 'x'), 'no')).rejects.toMatchObject({ code: 'EROFS' });
    } finally {
      await d.put('img');
    }
  });

  test('the seal is read afresh: a layer another instance removed and made again under its id is writable until applied', async () => {
    await d.create('base');
    await d.applyDiff('base', null, await emptyTar());
    const sealed = await d.get('base');
    expect(sealed).toBe(join(h.home, 'base', 'merged'));
    await d.put('base');
    const other = await h.open(); // its own locks, as another process has
    try {
      await other.remove('base');
      await other.create('base');
      const fresh = await d.get('base');
      try {
        expect(fresh).toBe(join(h.home, 'base', 'diff')); // not applied yet: no read-only bind
        await writeFile(join(fresh, 'x'), 'yes');
      } finally {
        await d.put('base');
      }
      await other.applyDiff('base', null, await emptyTar());
      const again = await d.get('base');
      try {
        expect(again).toBe(join(h.home, 'base', 'merged'));
        await expect(writeFile(join(again, 'y'), 'no')).rejects.toMatchObject({ code: 'EROFS' });
      } finally {
        await d.put('base');
      }
    } finally {
      await other.cleanup();
    }
  });

  test('many concurrent gets and puts on one layer mount once and end unmounted', async () => {
    await d.createReadWrite('base');
    await d.createReadWrite('c', 'base');
    const paths = await Promise.all(Array.from({ length: 50 }, () => d.get('c')));
    expect(new Set(paths).size).toBe(1);
    expect(await overlayMountsUnder(h.root)).toHaveLength(1);
    expect(await d.mountCount('c')).toBe(50);
    await Promise.all([...Array.from({ length: 49 }, () => d.put('c')), ...Array.from({ length: 20 }, () => d.get('c'))]);
    expect(await d.mountCount('c')).toBe(21);
    await Promise.all(Array.from({ length: 21 }, () => d.put('c')));
    expect(await overlayMountsUnder(h.root)).toHaveLength(0);
    expect(await code(d.put('c'))).toBe('ERR_NOT_MOUNTED');
  });

  test('remove refuses a mounted layer and a layer with children (deleting nothing), then removes the l/ link too', async () => {
    await d.createReadWrite('base');
    await d.createReadWrite('c', 'base');
    await d.get('c');
    expect(await code(d.remove('c'))).toBe('ERR_LAYER_IN_USE');
    expect(await code(d.remove('base'))).toBe('ERR_LAYER_IN_USE');
    expect(await d.exists('c')).toBe(true);
    await d.put('c');
    const short = await readFile(join(h.home, 'c', 'link'), 'utf8');
    await d.remove('c');
    expect(await d.exists('c')).toBe(false);
    expect(existsSync(join(h.home, 'l', short))).toBe(false);
    await d.remove('base');
    expect(await readdir(join(h.home, 'l'))).toEqual([]);
  });

  test('errors: existing id, missing parent, invalid id, unknown layer', async () => {
    await d.create('a');
    expect(await code(d.create('a'))).toBe('ERR_LAYER_EXISTS');
    expect(await code(d.create('b', 'nope'))).toBe('ERR_PARENT_NOT_FOUND');
    expect(await d.exists('b')).toBe(false);
    expect(await code(d.create('../x'))).toBe('ERR_INVALID_ID');
    expect(await code(d.get('nope'))).toBe('ERR_LAYER_NOT_FOUND');
    expect(await code(d.metadata('nope'))).toBe('ERR_LAYER_NOT_FOUND');
    expect(await code(d.create('q', null, { storageOpt: { size: '10M' } }))).toBe('ERR_QUOTA_UNSUPPORTED');
  });

  test('a root so long that absolute lowerdir paths exceed a page still mounts, with relative paths', async () => {
    await h.dispose();
    // Each path component must stay under NAME_MAX; nest several to pass 4 KiB of mount data.
    const h2 = await makeHome('cairn-ovl-long-');
    try {
      let deep = h2.root;
      for (let i = 0; i < 5; i++) deep = join(deep, `${'d'.repeat(200)}${i}`);
      await mkdir(deep, { recursive: true });
      const h3 = await makeHome('r-', deep);
      try {
        const d3 = await h3.open();
        await d3.createReadWrite('l0');
        await writeFile(join(await d3.get('l0'), 'bottom'), '0');
        await d3.put('l0');
        for (let i = 1; i <= 5; i++) await d3.createReadWrite(`l${i}`, `l${i - 1}`);
        const absData = 5 * join(h3.home, 'l', 'X'.repeat(26)).length;
        expect(absData).toBeGreaterThan(4096);
        const spec = await d3.mountSpecFor('l5');
        expect(spec!.cwd).toBe(h3.home);
        const root = await d3.get('l5');
        expect(await readFile(join(root, 'bottom'), 'utf8')).toBe('0');
        await writeFile(join(root, 'top'), '5');
        expect(await readFile(join(h3.home, 'l5', 'diff', 'top'), 'utf8')).toBe('5');
        expect(process.cwd()).not.toBe(h3.home);
        await d3.put('l5');
        expect(await overlayMountsUnder(h3.root)).toHaveLength(0);
      } finally {
        await h3.dispose();
      }
    } finally {
      await h2.dispose();
      h = await makeHome();
      d = await h.open();
    }
  });

  test('metadata names LowerDir (resolved diff dirs), UpperDir, WorkDir, MergedDir', async () => {
    await d.create('a');
    await d.create('b', 'a');
    await d.createReadWrite('c', 'b');
    const md = await d.metadata('c');
    expect(md).toEqual({
      LowerDir: `${join(h.home, 'b', 'diff')}:${join(h.home, 'a', 'diff')}`,
      UpperDir: join(h.home, 'c', 'diff'),
      WorkDir: join(h.home, 'c', 'work'),
      MergedDir: join(h.home, 'c', 'merged'),
    });
  });

  test('status reports backing fs, d_type, metacopy, native diff, userxattr and id-mapped mounts', async () => {
    const status = new Map(await d.status());
    expect([...status.keys()]).toEqual(['Backing Filesystem', 'Supports d_type', 'Using metacopy', 'Native Overlay Diff', 'userxattr', 'Id-mapped mounts']);
    expect(status.get('Id-mapped mounts')).toBe('yes');
    expect(status.get('Supports d_type')).toBe('true');
    expect(status.get('Backing Filesystem')).toBe(d.features.backingFs);
  });

  test('a second open of the same home works while the first is open, and sees its layers', async () => {
    const d2 = await h.open();
    await d.createReadWrite('base');
    expect(await d2.exists('base')).toBe(true);
    await d2.createReadWrite('c', 'base');
    expect(await d.exists('c')).toBe(true);
  });

  describe('recovery on open', () => {
    test('leftovers of an interrupted create are swept and dangling l/ links removed', async () => {
      await d.create('keep');
      await d.cleanup();
      const staged = join(h.home, STAGING_DIR, 'half-abc');
      await mkdir(join(staged, 'diff'), { recursive: true });
      await symlink('../half/diff', join(h.home, 'l', 'ZZZZZZZZZZZZZZZZZZZZZZZZZZ'));
      d = await h.open();
      expect(await readdir(join(h.home, STAGING_DIR))).toEqual([]);
      const links = await readdir(join(h.home, 'l'));
      expect(links).toEqual([await readFile(join(h.home, 'keep', 'link'), 'utf8')]);
      expect(await d.exists('half')).toBe(false);
    });

    test('a missing l/ symlink is recreated on open, and a missing one is recreated by get', async () => {
      await d.createReadWrite('base');
      await writeFile(join(await d.get('base'), 'f'), 'x');
      await d.put('base');
      await d.createReadWrite('c', 'base');
      const baseShort = await readFile(join(h.home, 'base', 'link'), 'utf8');
      await d.cleanup();
      await unlink(join(h.home, 'l', baseShort));
      d = await h.open();
      expect(await readlink(join(h.home, 'l', baseShort))).toBe('../base/diff');
      // Lost again while open: get repairs it instead of failing the mount.
      await unlink(join(h.home, 'l', baseShort));
      const root = await d.get('c');
      expect(await readFile(join(root, 'f'), 'utf8')).toBe('x');
      await d.put('c');
    });

    test('a missing link file is rewritten from its l/ symlink, keeping children mountable', async () => {
      await d.createReadWrite('base');
      await d.createReadWrite('c', 'base');
      const baseShort = await readFile(join(h.home, 'base', 'link'), 'utf8');
      await d.cleanup();
      await rm(join(h.home, 'base', 'link'));
      d = await h.open();
      expect(await readFile(join(h.home, 'base', 'link'), 'utf8')).toBe(baseShort);
      await d.get('c');
      await d.put('c');
    });

    test('a mount held by another driver instance is one mount with two holds; the first cleanup leaves it, the last put unmounts it', async () => {
      await d.createReadWrite('base');
      await d.createReadWrite('c', 'base');
      const root = await d.get('c');
      await writeFile(join(root, 'f'), 'live');
      const d2 = await h.open();
      expect(await d2.mountCount('c')).toBe(1);
      expect(await d2.get('c')).toBe(root);
      expect(await d2.mountCount('c')).toBe(2);
      expect(await overlayMountsUnder(h.root)).toHaveLength(1);
      expect(await code(d2.remove('c'))).toBe('ERR_LAYER_IN_USE');
      expect(await code(d2.put('c').then(() => d2.put('c')))).toBe('ERR_NOT_MOUNTED'); // d2 holds one get only
      await d2.get('c');
      await d.cleanup(); // d's hold goes; d2's keeps the mount
      expect(await overlayMountsUnder(h.root)).toHaveLength(1);
      expect(await readFile(join(root, 'f'), 'utf8')).toBe('live');
      await d2.put('c');
      expect(await overlayMountsUnder(h.root)).toHaveLength(0);
      expect(existsSync(root)).toBe(false);
    });

    test('cleanup unmounts everything and is safe twice', async () => {
      await d.createReadWrite('base');
      for (const id of ['a', 'b', 'c']) {
        await d.createReadWrite(id, 'base');
        await d.get(id);
      }
      await d.get('a');
      expect(await overlayMountsUnder(h.root)).toHaveLength(3);
      await d.cleanup();
      await d.cleanup();
      expect(await overlayMountsUnder(h.root)).toHaveLength(0);
      expect(await code(d.get('a'))).toBe('ERR_NOT_SUPPORTED');
    });
  });
});
