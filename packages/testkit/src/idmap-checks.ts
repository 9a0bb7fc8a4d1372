import { execFile } from 'node:child_process';
import { lstat, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import type { IdMappings, StorageDriver } from '@cairnfs/core';
import { collect, expectCode, tarOf } from './conformance.js';
import tarStream from 'tar-stream';

const run = promisify(execFile);

/** container 0-65535 → host `base`…: the shape of a /etc/subuid range. */
export function shiftMap(base: number, size = 65536): IdMappings {
  return { uidMap: [{ containerId: 0, hostId: base, size }], gidMap: [{ containerId: 0, hostId: base, size }] };
}

/** An image layer as people ship them: files owned by root, daemon (1), www-data (33) and nobody (65534). */
export async function multiUserLayerTar(): Promise<Buffer> {
  return tarOf([
    { name: 'etc', type: 'directory', mode: 0o755 },
    { name: 'etc/passwd', content: 'root:x:0:0::/root:/bin/sh\n', mode: 0o644 },
    { name: 'var', type: 'directory', mode: 0o755 },
    { name: 'var/www', type: 'directory', mode: 0o750, uid: 33, gid: 33 },
    { name: 'var/www/index.html', content: '<p>hi</p>', uid: 33, gid: 33 },
    { name: 'usr', type: 'directory' },
    { name: 'usr/sbin', type: 'directory' },
    { name: 'usr/sbin/daemon', content: '#!/bin/sh\n', mode: 0o4755, uid: 1, gid: 1 },
    { name: 'nobody', content: 'n', uid: 65534, gid: 65534 },
    { name: 'link', type: 'symlink', linkname: 'etc/passwd', uid: 33, gid: 33 },
  ]);
}

/** Owner, inode and ctime of every entry below `dir` (ctime moves on any chown or copy). */
export async function ownersAndInodes(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const visit = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const path = rel === '' ? name : `${rel}/${name}`;
      const st = await lstat(join(dir, path), { bigint: true });
      out.set(path, `${st.uid}:${st.gid} ino=${st.ino} ctime=${st.ctimeNs}`);
      if (st.isDirectory()) await visit(path);
    }
  };
  await visit('');
  return out;
}

/** `uid:gid` of each path below `root`, symlinks themselves. */
export async function ownersOf(root: string, paths: string[]): Promise<string[]> {
  return Promise.all(paths.map(async (p) => {
    const st = await lstat(join(root, p));
    return `${p} ${st.uid}:${st.gid}`;
  }));
}

/**
 * Runs the shell `script` as host uid/gid `id` (what a process of a mapped container is on
 * the host) with its cwd at `root`: like a container process, it reaches files below its
 * root without passing through the driver's 0700 home above it.
 */
export async function runAs(id: number, root: string, script: string): Promise<void> {
  await run('setpriv', [`--reuid=${id}`, `--regid=${id}`, '--clear-groups', '--', 'sh', '-c', script], { cwd: root });
}

export interface IdmapHarness {
  driver: StorageDriver;
  /** Absolute path of a layer's own files on disk (overlay2: `<id>/diff`; vfs: `dir/<id>`). */
  layerDir(id: string): string;
  dispose(): Promise<void>;
}

/**
 * What an id-mapped `get` must do on every driver that offers it (vfs, overlay2; btrfs
 * where the kernel allows): one image layer, two containers with different maps mounted
 * at once, each seeing its own host ids, the image layer on disk never chowned or
 * copied; a process running as the mapped root writes as the container's root. Run as
 * root. `fallback` says the driver was opened to make chown copies instead.
 */
export function idmappedGetChecks(name: string, factory: () => Promise<IdmapHarness>, opts: {
  fallback?: boolean;
  /** Every layer is a full copy of its parent (vfs): a container's files are its own layer's, not the image's. */
  fullCopies?: boolean;
} = {}): void {
  const A = shiftMap(100000);
  const B = shiftMap(200000);
  const paths = ['etc/passwd', 'var/www', 'var/www/index.html', 'usr/sbin/daemon', 'nobody', 'link'];

  async function withHarness(fn: (h: IdmapHarness) => Promise<void>): Promise<void> {
    const h = await factory();
    try {
      await fn(h);
    } finally {
      await h.dispose();
    }
  }

  async function image(d: StorageDriver): Promise<void> {
    await d.create('img');
    await d.applyDiff('img', null, Readable.from([await multiUserLayerTar()]));
  }

  describe(`${name}: get with idMappings${opts.fallback ? ' (chown-copy fallback)' : ''}`, () => {
    test('two containers on one image see their own host ids at the same time; the image layer is never chowned or copied', () => withHarness(async (h) => {
      const d = h.driver;
      await image(d);
      const before = await ownersAndInodes(h.layerDir('img'));
      await d.createReadWrite('c1', 'img');
      await d.createReadWrite('c2', 'img');
      const r1 = await d.get('c1', { idMappings: A });
      const r2 = await d.get('c2', { idMappings: B });
      try {
        expect(await ownersOf(r1, ['', ...paths])).toEqual([
          ' 100000:100000', 'etc/passwd 100000:100000', 'var/www 100033:100033', 'var/www/index.html 100033:100033',
          'usr/sbin/daemon 100001:100001', 'nobody 165534:165534', 'link 100033:100033']);
        expect(await ownersOf(r2, ['', ...paths])).toEqual([
          ' 200000:200000', 'etc/passwd 200000:200000', 'var/www 200033:200033', 'var/www/index.html 200033:200033',
          'usr/sbin/daemon 200001:200001', 'nobody 265534:265534', 'link 200033:200033']);
        expect((await stat(join(r1, 'usr/sbin/daemon'))).mode & 0o7777).toBe(0o4755);
        // The layer on disk: same owners, same inodes, same ctimes (no chown, no copy).
        expect(await ownersAndInodes(h.layerDir('img'))).toEqual(before);
        expect(await ownersOf(h.layerDir('img'), paths)).toEqual([
          'etc/passwd 0:0', 'var/www 33:33', 'var/www/index.html 33:33', 'usr/sbin/daemon 1:1', 'nobody 65534:65534', 'link 33:33']);
        // The image layer mounted plainly beside them still shows the stored ids.
        const plain = await d.get('img');
        try {
          expect(await ownersOf(plain, ['etc/passwd', 'var/www'])).toEqual(['etc/passwd 0:0', 'var/www 33:33']);
        } finally {
          await d.put('img');
        }
        if (!opts.fallback) {
          // Same file, same inode: the container reads the file on disk (the image's own, or
          // on full-copy drivers its own layer's), not a copy made for the map.
          const inner = await stat(join(r1, 'var/www/index.html'), { bigint: true });
          const disk = await stat(join(h.layerDir(opts.fullCopies ? 'c1' : 'img'), 'var/www/index.html'), { bigint: true });
          expect(inner.ino).toBe(disk.ino);
        }
      } finally {
        await d.put('c1');
        await d.put('c2');
      }
      expect(await ownersAndInodes(h.layerDir('img'))).toEqual(before);
    }));

    test('a process running as the mapped root writes as the container root; the image layer stays as it was', () => withHarness(async (h) => {
      const d = h.driver;
      await image(d);
      const before = await ownersAndInodes(h.layerDir('img'));
      await d.createReadWrite('c1', 'img');
      const r1 = await d.get('c1', { idMappings: A });
      try {
        await runAs(100000, r1, 'echo new > etc/new && echo more >> etc/passwd');
        await runAs(100033, r1, 'echo page > var/www/page.html');
        expect(await ownersOf(r1, ['etc/new', 'etc/passwd', 'var/www/page.html'])).toEqual([
          'etc/new 100000:100000', 'etc/passwd 100000:100000', 'var/www/page.html 100033:100033']);
      } finally {
        await d.put('c1');
      }
      expect(await ownersAndInodes(h.layerDir('img'))).toEqual(before);
    }));

    test('a two-layer image with a deletion: every lower is mapped, the deletion holds, and an image layer itself mounts mapped read-only', () => withHarness(async (h) => {
      const d = h.driver;
      await image(d);
      await d.create('img2', 'img');
      await d.applyDiff('img2', 'img', Readable.from([await tarOf([
        { name: 'var', type: 'directory' }, { name: 'var/www', type: 'directory', mode: 0o750, uid: 33, gid: 33 },
        { name: 'var/www/.wh.index.html' }, { name: 'var/www/app.js', content: 'x', uid: 1000, gid: 1000 },
      ])]));
      await d.createReadWrite('c1', 'img2');
      const r1 = await d.get('c1', { idMappings: A });
      try {
        expect((await readdir(join(r1, 'var/www'))).sort()).toEqual(['app.js']);
        expect(await ownersOf(r1, ['var/www/app.js', 'etc/passwd'])).toEqual(['var/www/app.js 101000:101000', 'etc/passwd 100000:100000']);
      } finally {
        await d.put('c1');
      }
      const ro = await d.get('img2', { idMappings: B });
      try {
        expect(await ownersOf(ro, ['var/www/app.js', 'etc/passwd'])).toEqual(['var/www/app.js 201000:201000', 'etc/passwd 200000:200000']);
        await expect(runAs(0, ro, 'echo x > etc/passwd')).rejects.toThrow(/Read-only file system/);
      } finally {
        await d.put('img2');
      }
    }));

    test('a layer mounted with one map is refused with another (or none) until put', () => withHarness(async (h) => {
      const d = h.driver;
      await image(d);
      await d.createReadWrite('c1', 'img');
      const r1 = await d.get('c1', { idMappings: A });
      try {
        await expectCode(d.get('c1', { idMappings: B }), 'ERR_LAYER_IN_USE');
        await expectCode(d.get('c1'), 'ERR_LAYER_IN_USE');
        expect(await d.get('c1', { idMappings: shiftMap(100000) })).toBe(r1); // the same map counts
        await d.put('c1');
      } finally {
        await d.put('c1');
      }
      await expectCode(d.put('c1'), 'ERR_NOT_MOUNTED');
    }));

    test('bad maps are refused before anything is mounted', () => withHarness(async (h) => {
      const d = h.driver;
      await image(d);
      await d.createReadWrite('c1', 'img');
      await expectCode(d.get('c1', { idMappings: { uidMap: [], gidMap: A.gidMap } }), 'ERR_INVALID_OPTION');
      await expectCode(d.get('c1', { idMappings: { uidMap: [{ containerId: 0, hostId: 1000, size: 10 }, { containerId: 5, hostId: 2000, size: 10 }], gidMap: A.gidMap } }), 'ERR_INVALID_OPTION');
      await expectCode(d.put('c1'), 'ERR_NOT_MOUNTED');
    }));

    test('status says how id-mapped gets are made', () => withHarness(async (h) => {
      const row = (await h.driver.status()).find(([k]) => k === 'Id-mapped mounts');
      expect(row?.[1]).toMatch(opts.fallback ? /^no, chown copies \(.+\)$/ : /^yes$/);
    }));
  });
}

/** `name uid:gid` of every entry of a tar (directories without their trailing '/'), sorted. */
export async function tarOwners(tar: Buffer | NodeJS.ReadableStream | AsyncIterable<Uint8Array>): Promise<string[]> {
  const bytes = Buffer.isBuffer(tar) ? tar : await collect(tar as AsyncIterable<Uint8Array>);
  const extract = tarStream.extract();
  const out: string[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      out.push(`${entry.header.name.replace(/\/$/, '')} ${entry.header.uid}:${entry.header.gid}`);
      entry.resume();
    }
  })();
  extract.end(bytes);
  await done;
  return out.sort();
}

/**
 * applyDiff with idMappings (layers stored shifted, as containers/storage keeps them for
 * user-namespaced containers) and diff mapping back: the round trip gives the original
 * owners; a container written through an id-mapped get diffs in container ids. Run as root.
 */
export function shiftedLayerChecks(name: string, factory: () => Promise<IdmapHarness>): void {
  const A = shiftMap(100000);
  async function withHarness(fn: (h: IdmapHarness) => Promise<void>): Promise<void> {
    const h = await factory();
    try {
      await fn(h);
    } finally {
      await h.dispose();
    }
  }

  describe(`${name}: applyDiff with idMappings, and diff mapping back`, () => {
    test('an image applied with a map is stored in host ids; diff gives the original owners; its child inherits the map', () => withHarness(async (h) => {
      const d = h.driver;
      const tar = await multiUserLayerTar();
      await d.create('img');
      await d.applyDiff('img', null, Readable.from([tar]), { idMappings: A });
      expect(await ownersOf(h.layerDir('img'), ['etc/passwd', 'var/www/index.html', 'nobody'])).toEqual([
        'etc/passwd 100000:100000', 'var/www/index.html 100033:100033', 'nobody 165534:165534']);
      expect(await tarOwners(await d.diff('img', null))).toEqual(await tarOwners(tar));
      await d.create('img2', 'img');
      const top = await tarOf([{ name: 'var', type: 'directory' }, { name: 'var/www', type: 'directory', mode: 0o750, uid: 33, gid: 33 },
        { name: 'var/www/app.js', content: 'x', uid: 1000, gid: 1000 }]);
      await d.applyDiff('img2', 'img', Readable.from([top]));
      expect(await ownersOf(h.layerDir('img2'), ['var/www/app.js'])).toEqual(['var/www/app.js 101000:101000']);
      expect(await tarOwners(await d.diff('img2', 'img'))).toEqual(await tarOwners(top));
      // A different map on top of a shifted layer is refused before anything is written.
      await d.create('img3', 'img2');
      await expectCode(d.applyDiff('img3', 'img2', Readable.from([top]), { idMappings: shiftMap(300000) }), 'ERR_INVALID_OPTION');
      // A container on it, got with the same map, is shown as stored; with another, refused.
      await d.createReadWrite('c1', 'img2');
      const r = await d.get('c1', { idMappings: A });
      try {
        expect(await ownersOf(r, ['etc/passwd', 'var/www/app.js'])).toEqual(['etc/passwd 100000:100000', 'var/www/app.js 101000:101000']);
      } finally {
        await d.put('c1');
      }
      await expectCode(d.get('c1', { idMappings: shiftMap(300000) }), 'ERR_INVALID_OPTION');
    }));

    test('files a mapped container writes diff in container ids (written through an id-mapped get on an unshifted image)', () => withHarness(async (h) => {
      const d = h.driver;
      await d.create('img');
      await d.applyDiff('img', null, Readable.from([await multiUserLayerTar()]));
      await d.createReadWrite('c1', 'img');
      const r = await d.get('c1', { idMappings: A });
      try {
        await runAs(100000, r, 'echo new > etc/new && echo more >> etc/passwd && rm nobody');
        await runAs(100033, r, 'echo page > var/www/page.html');
      } finally {
        await d.put('c1');
      }
      const owners = await tarOwners(await d.diff('c1', 'img'));
      expect(owners).toEqual(expect.arrayContaining(['etc/new 0:0', 'etc/passwd 0:0', 'var/www/page.html 33:33', '.wh.nobody 0:0']));
      expect(owners.every((o) => /^\S+ (0|1|33|65534):(0|1|33|65534)$/.test(o))).toBe(true);
      expect((await d.changes('c1', 'img')).map((c) => `${c.kind} ${c.path}`)).toEqual(expect.arrayContaining(['add /etc/new', 'modify /etc/passwd', 'delete /nobody', 'add /var/www/page.html']));
    }));
  });
}
