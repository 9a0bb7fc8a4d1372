import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { lgetxattrSync, lsetxattrSync, lutimesNsSync, mknodSync } from '@cairnfs/sys';
import { type Change } from '@cairnfs/core';
import { applyLayer, exportChanges, exportOverlayUpper, packEntries, type TarSourceEntry } from '@cairnfs/archive';
import { testAsRoot } from '@cairnfs/testkit';
import { chunked, gnuTar, readAll, removeDir, snapshotTree, streamToBuffer, tempDir } from './helpers.js';

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
// VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_BIND_SERVICE: a blob the kernel accepts.
const CAPABILITY = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

let work: string;
beforeEach(() => { work = tempDir('apply'); });
afterEach(() => removeDir(work));


/** Every kind of node a layer can hold, with awkward metadata. Returns its paths. */
function buildTree(root: string): string[] {
  const p = (rel: string) => path.join(root, rel);
  fs.mkdirSync(p('etc/deep/er'), { recursive: true });
  fs.mkdirSync(p('tmp'));
  fs.mkdirSync(p('private'));
  fs.writeFileSync(p('etc/empty'), '');
  fs.writeFileSync(p('etc/hosts'), '127.0.0.1 localhost\n');
  fs.writeFileSync(p('etc/deep/er/big'), Buffer.alloc(1_500_000, 0xab));
  fs.writeFileSync(p('etc/zero-mode'), 'secret');
  fs.writeFileSync(p('etc/setuid'), '#!/bin/sh\n');
  fs.writeFileSync(p('etc/setgid'), '#!/bin/sh\n');
  fs.writeFileSync(p('etc/cap'), 'binary');
  const long = 'etc/' + 'L'.repeat(140);
  fs.writeFileSync(p(long), 'long name');
  fs.linkSync(p('etc/hosts'), p('etc/hosts.hard1'));
  fs.linkSync(p('etc/hosts'), p('tmp/hosts.hard2'));
  fs.symlinkSync('hosts', p('etc/rel-link'));
  fs.symlinkSync('/etc/hosts', p('etc/abs-link'));
  fs.symlinkSync('nowhere/' + 'x'.repeat(200), p('etc/dangling-long'));
  mknodSync(p('etc/null'), fs.constants.S_IFCHR | 0o666, 1, 3);
  mknodSync(p('etc/loop'), fs.constants.S_IFBLK | 0o660, 7, 300);
  mknodSync(p('etc/fifo'), fs.constants.S_IFIFO | 0o600, 0, 0);
  lsetxattrSync(p('etc/hosts'), 'user.bin', ALL_BYTES);
  lsetxattrSync(p('etc/deep'), 'trusted.note', Buffer.from('dir xattr'));
  lsetxattrSync(p('etc/deep'), 'user.empty', Buffer.alloc(0));
  fs.chownSync(p('etc/setuid'), 3_000_000, 3_000_001);
  fs.chownSync(p('etc/deep/er'), 1000, 1000);
  fs.lchownSync(p('etc/rel-link'), 42, 43);
  fs.chownSync(p('etc/cap'), 5, 6);
  fs.chmodSync(p('etc/zero-mode'), 0);
  fs.chmodSync(p('etc/setuid'), 0o4755);
  fs.chmodSync(p('etc/setgid'), 0o2711);
  fs.chmodSync(p('tmp'), 0o1777);
  fs.chmodSync(p('private'), 0o700);
  lsetxattrSync(p('etc/cap'), 'security.capability', CAPABILITY); // after chown, which clears it
  // A setgid directory: files made in it take its group, so a root:root file inside
  // must be chowned on apply even though root creates it.
  fs.mkdirSync(p('sgid'));
  fs.chownSync(p('sgid'), 0, 100);
  fs.chmodSync(p('sgid'), 0o2775);
  fs.writeFileSync(p('sgid/rootfile'), 'r');
  fs.chownSync(p('sgid/rootfile'), 0, 0);
  fs.writeFileSync(p('sgid/all-perms'), 'umask must not cut these');
  fs.chmodSync(p('sgid/all-perms'), 0o777);
  // Directories mkdir cannot make exact: one that would inherit setgid and the group,
  // one whose mode the umask would cut.
  fs.mkdirSync(p('sgid/plain'));
  fs.chownSync(p('sgid/plain'), 0, 0);
  fs.chmodSync(p('sgid/plain'), 0o755);
  fs.mkdirSync(p('etc/group-writable'));
  fs.chmodSync(p('etc/group-writable'), 0o775);
  const paths: string[] = [];
  const walk = (rel: string) => {
    for (const n of fs.readdirSync(p(rel)).sort()) {
      const r = rel ? `${rel}/${n}` : n;
      paths.push(r);
      if (fs.lstatSync(p(r)).isDirectory()) walk(r);
    }
  };
  walk('');
  // Distinct nanosecond times on everything, children before parents.
  let t = 1_600_000_000_000_000_123n;
  for (const r of [...paths].reverse()) lutimesNsSync(p(r), t + 7n, (t += 1_000_000_001n));
  return paths;
}

function withoutRoot(tree: ReturnType<typeof snapshotTree>) {
  delete tree['.'];
  return tree;
}

describe('applyLayer', () => {
  testAsRoot('round trip: exportChanges of every path → applyLayer into an empty dir gives the identical tree', async () => {
    const src = path.join(work, 'src');
    const dst = path.join(work, 'dst');
    fs.mkdirSync(src);
    fs.mkdirSync(dst);
    const paths = buildTree(src);
    const changes: Change[] = paths.map((p) => ({ path: '/' + p, kind: 'add' }));
    const bytes = await applyLayer(dst, exportChanges(src, changes));
    expect(withoutRoot(snapshotTree(dst))).toEqual(withoutRoot(snapshotTree(src)));
    expect(bytes).toBe(1_500_000 + 20 + 0 + 6 + 10 + 10 + 6 + 9 + 1 + 24); // each inode's content once
    expect(lgetxattrSync(path.join(dst, 'etc/cap'), 'security.capability')).toEqual(CAPABILITY);
  });

  testAsRoot('GNU tar extracts our export into the identical tree', async () => {
    const src = path.join(work, 'src');
    const dst = path.join(work, 'dst');
    fs.mkdirSync(src);
    fs.mkdirSync(dst);
    const paths = buildTree(src);
    const tar = await streamToBuffer(exportChanges(src, paths.map((p) => ({ path: '/' + p, kind: 'add' }))));
    fs.writeFileSync(path.join(work, 'l.tar'), tar);
    gnuTar(['-xpf', path.join(work, 'l.tar'), '--xattrs', '--xattrs-include=*', '--numeric-owner', '-C', dst], work);
    const strip = (t: ReturnType<typeof snapshotTree>) => {
      // GNU tar does not restore symlink timestamps; everything else must match.
      for (const f of Object.values(t)) if (f.type === 'symlink') f.mtimeNs = '-';
      return withoutRoot(t);
    };
    expect(strip(snapshotTree(dst))).toEqual(strip(snapshotTree(src)));
  });

  test('the same tar applied in odd-sized chunks gives the same tree, and the byte count is the content size', async () => {
    const src = path.join(work, 'src');
    fs.mkdirSync(path.join(src, 'a'), { recursive: true });
    fs.writeFileSync(path.join(src, 'a/one'), Buffer.alloc(100_003, 1));
    fs.writeFileSync(path.join(src, 'a/two'), 'two');
    const tar = gnuTar(['--format=pax', '-cf', '-', 'a'], src);
    for (const size of [7, 511, 513, 65536]) {
      const dst = path.join(work, `dst${size}`);
      fs.mkdirSync(dst);
      expect(await applyLayer(dst, chunked(tar, size), { ownership: false })).toBe(100_006);
      expect(fs.readFileSync(path.join(dst, 'a/one')).equals(Buffer.alloc(100_003, 1))).toBe(true);
    }
  });

  test('existing directories are kept (metadata updated); a non-directory in the way is replaced', async () => {
    const dst = path.join(work, 'dst');
    fs.mkdirSync(path.join(dst, 'keep'), { recursive: true });
    fs.writeFileSync(path.join(dst, 'keep/old'), 'old');
    fs.writeFileSync(path.join(dst, 'was-file'), 'x');
    fs.mkdirSync(path.join(dst, 'was-dir/sub'), { recursive: true });
    await applyLayer(dst, packEntries([
      { header: { name: 'keep', type: 'dir', mode: 0o711, mtimeNs: 1_000_000_000_000_000_005n } },
      { header: { name: 'was-file', type: 'dir', mode: 0o755 } },
      { header: { name: 'was-dir', type: 'file', mode: 0o644, size: 3 }, body: Buffer.from('new') },
    ]), { ownership: false });
    expect(fs.readFileSync(path.join(dst, 'keep/old'), 'utf8')).toBe('old');
    const keep = fs.statSync(path.join(dst, 'keep'), { bigint: true });
    expect(Number(keep.mode & 0o7777n)).toBe(0o711);
    expect(keep.mtimeNs).toBe(1_000_000_000_000_000_005n);
    expect(fs.statSync(path.join(dst, 'was-file')).isDirectory()).toBe(true);
    expect(fs.readFileSync(path.join(dst, 'was-dir'), 'utf8')).toBe('new');
  });

  test('sparse files from GNU tar are written with holes', async () => {
    const src = path.join(work, 'src');
    fs.mkdirSync(src);
    const fd = fs.openSync(path.join(src, 'sp'), 'w');
    fs.writeSync(fd, 'head', 0);
    fs.writeSync(fd, 'tail', 200 << 20);
    fs.closeSync(fd);
    for (const v of ['0.0', '0.1', '1.0']) {
      const dst = path.join(work, `dst${v}`);
      fs.mkdirSync(dst);
      const tar = gnuTar(['--format=pax', '--sparse', `--sparse-version=${v}`, '-cf', '-', 'sp'], src);
      // GNU tar stores whole blocks around the data, so a few KiB, not 200 MiB, are written.
      expect(await applyLayer(dst, chunked(tar, 4096), { ownership: false })).toBeLessThan(16384);
      const st = fs.statSync(path.join(dst, 'sp'));
      expect(st.size).toBe((200 << 20) + 4);
      expect(st.blocks * 512).toBeLessThan(1 << 20);
      const fdr = fs.openSync(path.join(dst, 'sp'), 'r');
      const b = Buffer.alloc(4);
      fs.readSync(fdr, b, 0, 4, 200 << 20);
      fs.closeSync(fdr);
      expect(b.toString()).toBe('tail');
    }
  });

  test('a truncated tar fails with ERR_INVALID_ARCHIVE and leaves no partial file under its final name', async () => {
    const dst = path.join(work, 'dst');
    fs.mkdirSync(dst);
    const whole = await streamToBuffer(packEntries([
      { header: { name: 'done', type: 'file', mode: 0o644, size: 1 }, body: Buffer.from('d') },
      { header: { name: 'partial', type: 'file', mode: 0o644, size: 100_000 }, body: Buffer.alloc(100_000) },
    ]));
    await expect(applyLayer(dst, chunked(whole.subarray(0, 60_000), 8192))).rejects.toMatchObject({ code: 'ERR_INVALID_ARCHIVE' });
    expect(fs.readdirSync(dst)).toEqual(['done']);
  });
  testAsRoot('a full filesystem is ERR_NO_SPACE, and the half-written file is removed', async () => {
    const small = path.join(work, 'small');
    fs.mkdirSync(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', small]);
    try {
      const stream = packEntries([
        { header: { name: 'fits', type: 'file', mode: 0o644, size: 10 }, body: Buffer.alloc(10) },
        { header: { name: 'too-big', type: 'file', mode: 0o644, size: 1 << 20 }, body: Buffer.alloc(1 << 20) },
      ]);
      await expect(applyLayer(small, stream)).rejects.toMatchObject({ code: 'ERR_NO_SPACE', name: 'CairnError' });
      expect(fs.readdirSync(small)).toEqual(['fits']);
    } finally {
      execFileSync('umount', [small]);
    }
  });
});

describe('whiteouts', () => {
  /** The parent tree a layer is applied on top of. */
  function parentTree(dir: string): void {
    fs.mkdirSync(path.join(dir, 'a'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'b/c'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'a/x'), 'x');
    fs.writeFileSync(path.join(dir, 'a/y'), 'y');
    fs.writeFileSync(path.join(dir, 'b/c/d'), 'd');
    fs.writeFileSync(path.join(dir, 'b/old'), 'old');
  }
  const layer = (): TarSourceEntry[] => [
    { header: { name: 'a/.wh.x', type: 'file', mode: 0, size: 0 } },
    { header: { name: 'b', type: 'dir', mode: 0o755 } },
    { header: { name: 'b/.wh..wh..opq', type: 'file', mode: 0, size: 0 } },
    { header: { name: 'b/new', type: 'file', mode: 0o644, size: 3 }, body: Buffer.from('new') },
    { header: { name: 'gone/.wh.nothing', type: 'file', mode: 0, size: 0 } },
    { header: { name: '.wh..wh.plnk', type: 'dir', mode: 0o700 } },
  ];

  test("delete: .wh.<name> removes it and .wh..wh..opq empties the directory of the parent's entries", async () => {
    const dst = path.join(work, 'dst');
    parentTree(dst);
    // The opaque marker after b/new must keep b/new: entries of this layer stay.
    const entries = layer();
    entries.splice(2, 2, entries[3]!, entries[2]!);
    await applyLayer(dst, packEntries(entries), { whiteouts: 'delete', ownership: false });
    expect(fs.readdirSync(path.join(dst, 'a'))).toEqual(['y']);
    expect(fs.readdirSync(path.join(dst, 'b'))).toEqual(['new']);
    expect(fs.existsSync(path.join(dst, 'gone'))).toBe(false);
    expect(fs.readdirSync(dst).sort()).toEqual(['a', 'b']);
  });

  testAsRoot('overlay: whiteouts become 0/0 char devices and opaque xattrs, and a real overlay mount shows the deletions', async () => {
    const lower = path.join(work, 'lower');
    const upper = path.join(work, 'upper');
    const wd = path.join(work, 'work');
    const merged = path.join(work, 'merged');
    parentTree(lower);
    for (const d of [upper, wd, merged]) fs.mkdirSync(d);
    await applyLayer(upper, packEntries(layer()), { whiteouts: 'overlay' });
    const wh = fs.lstatSync(path.join(upper, 'a/x'));
    expect(wh.isCharacterDevice()).toBe(true);
    expect(wh.rdev).toBe(0);
    expect(wh.mode & 0o7777).toBe(0);
    expect(lgetxattrSync(path.join(upper, 'b'), 'trusted.overlay.opaque')!.toString()).toBe('y');
    expect(fs.existsSync(path.join(upper, 'gone'))).toBe(true); // overlay mode creates the parent for the whiteout
    expect(fs.existsSync(path.join(upper, '.wh..wh.plnk'))).toBe(false);
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${wd}`, merged]);
    try {
      expect(fs.readdirSync(path.join(merged, 'a'))).toEqual(['y']);
      expect(fs.readdirSync(path.join(merged, 'b'))).toEqual(['new']);
    } finally {
      execFileSync('umount', [merged]);
    }
  });

  for (const pureJs of [false, true]) {
    testAsRoot(`overlay (${pureJs ? 'pure JS' : 'native'}): a dir re-created after its whiteout in the same layer is opaque, with or without a dir entry`, async () => {
      const upper = path.join(work, 'upper');
      fs.mkdirSync(upper);
      await applyLayer(upper, packEntries([
        { header: { name: '.wh.d', type: 'file', mode: 0, size: 0 } },
        { header: { name: 'd', type: 'dir', mode: 0o755 } },
        { header: { name: 'd/g', type: 'file', mode: 0o644, size: 1 }, body: Buffer.from('g') },
        { header: { name: '.wh.e', type: 'file', mode: 0, size: 0 } },
        { header: { name: 'e/sub/g', type: 'file', mode: 0o644, size: 1 }, body: Buffer.from('g') },
        { header: { name: 'plain', type: 'dir', mode: 0o755 } },
      ]), { whiteouts: 'overlay', pureJs });
      for (const d of ['d', 'e']) {
        expect(fs.lstatSync(path.join(upper, d)).isDirectory()).toBe(true);
        expect(lgetxattrSync(path.join(upper, d), 'trusted.overlay.opaque')?.toString()).toBe('y');
      }
      expect(fs.readFileSync(path.join(upper, 'e/sub/g'), 'utf8')).toBe('g');
      // Only re-created dirs: a new dir below one, or one never whited out, stays transparent.
      expect(lgetxattrSync(path.join(upper, 'e/sub'), 'trusted.overlay.opaque')).toBeNull();
      expect(lgetxattrSync(path.join(upper, 'plain'), 'trusted.overlay.opaque')).toBeNull();
    });
  }

  test('aufs: whiteouts are kept as plain .wh. files', async () => {
    const dst = path.join(work, 'dst');
    parentTree(dst);
    await applyLayer(dst, packEntries(layer()), { whiteouts: 'aufs', ownership: false });
    expect(fs.readdirSync(path.join(dst, 'a')).sort()).toEqual(['.wh.x', 'x', 'y']);
    expect(fs.readdirSync(path.join(dst, 'b')).sort()).toEqual(['.wh..wh..opq', 'c', 'new', 'old']);
    expect(fs.lstatSync(path.join(dst, 'a/.wh.x')).isFile()).toBe(true);
  });

  test('exportChanges writes deletions as .wh. entries, sorted, and later inode paths as hardlinks', async () => {
    const src = path.join(work, 'src');
    fs.mkdirSync(path.join(src, 'd'), { recursive: true });
    fs.writeFileSync(path.join(src, 'd/one'), '1');
    fs.linkSync(path.join(src, 'd/one'), path.join(src, 'd/two'));
    const changes: Change[] = [
      { path: '/d/two', kind: 'add' }, { path: '/d/removed', kind: 'delete' },
      { path: '/d', kind: 'modify' }, { path: '/d/one', kind: 'add' },
    ];
    const tar = await streamToBuffer(exportChanges(src, changes));
    const entries = await readAll(tar);
    expect(entries.map((e) => [e.header.name, e.header.type, e.header.linkname])).toEqual([
      // Sorted by the changed path (as moby's ExportChanges), so /d/removed's whiteout sits between one and two.
      ['d/', 'dir', undefined], ['d/one', 'file', undefined], ['d/.wh.removed', 'file', undefined], ['d/two', 'hardlink', 'd/one'],
    ]);
    expect(tar.equals(await streamToBuffer(exportChanges(src, [...changes].reverse())))).toBe(true);
  });

  testAsRoot("exportChanges with whiteouts: 'overlay' turns 0/0 char devices and opaque dirs into OCI whiteouts", async () => {
    const upper = path.join(work, 'upper');
    fs.mkdirSync(path.join(upper, 'o'), { recursive: true });
    mknodSync(path.join(upper, 'gone'), fs.constants.S_IFCHR, 0, 0);
    mknodSync(path.join(upper, 'null'), fs.constants.S_IFCHR | 0o666, 1, 3);
    lsetxattrSync(path.join(upper, 'o'), 'trusted.overlay.opaque', Buffer.from('y'));
    const changes: Change[] = ['/gone', '/null', '/o'].map((p) => ({ path: p, kind: 'add' }));
    const overlay = await readAll(exportChanges(upper, changes, { whiteouts: 'overlay' }));
    expect(overlay.map((e) => [e.header.name, e.header.type])).toEqual([
      ['.wh.gone', 'file'], ['null', 'char'], ['o/', 'dir'], ['o/.wh..wh..opq', 'file'],
    ]);
    const plain = await readAll(exportChanges(upper, changes));
    expect(plain.map((e) => [e.header.name, e.header.type])).toEqual([['gone', 'char'], ['null', 'char'], ['o/', 'dir']]);
  });

  testAsRoot('exportOverlayUpper packs a kernel-made upper dir; applying it in delete mode reproduces the merged view', async () => {
    const lower = path.join(work, 'lower');
    const upper = path.join(work, 'upper');
    const wd = path.join(work, 'work');
    const merged = path.join(work, 'merged');
    parentTree(lower);
    for (const d of [upper, wd, merged]) fs.mkdirSync(d);
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${wd}`, merged]);
    let expected: ReturnType<typeof snapshotTree>;
    try {
      fs.rmSync(path.join(merged, 'a/x'));
      fs.rmSync(path.join(merged, 'b'), { recursive: true });
      fs.mkdirSync(path.join(merged, 'b'));
      fs.writeFileSync(path.join(merged, 'b/new'), 'new');
      fs.writeFileSync(path.join(merged, 'top'), 'top');
      expected = snapshotTree(merged, { xattrFilter: (n) => !n.startsWith('trusted.overlay.') });
    } finally {
      execFileSync('umount', [merged]);
    }
    const entries = await readAll(exportOverlayUpper(upper));
    const names = entries.map((e) => e.header.name);
    expect(names).toEqual(expect.arrayContaining(['a/', 'a/.wh.x', 'b/', 'b/.wh..wh..opq', 'b/new', 'top']));
    expect(entries.find((e) => e.header.name === 'b/')!.header.xattrs.has('trusted.overlay.opaque')).toBe(false);
    const target = path.join(work, 'target');
    execFileSync('cp', ['-a', lower, target]);
    await applyLayer(target, exportOverlayUpper(upper));
    const got = snapshotTree(target);
    delete got['.'];
    delete expected['.'];
    expect(got).toEqual(expected);
  });
});

