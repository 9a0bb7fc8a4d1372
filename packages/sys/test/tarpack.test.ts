// TarPacker: the layer tar written by the addon. GNU tar must read back exactly the tree
// that was packed (content, modes, ns mtimes, links, devices, xattrs); the bytes must not
// depend on how the output is cut into buffers; failures carry the codes export maps.
import { execFileSync } from 'node:child_process';
import { link, lstat, mkdir, readFile, readlink, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  PACK_OVERLAY, constants, lgetxattrSync, llistxattrSync, lsetxattrSync, lutimesNsSync, mknodSync, openTarPacker,
  type TarPacker,
} from '@cairnfs/sys';
import { scratch, type Scratch } from './helpers.js';

let s: Scratch;
let tree: string;
beforeEach(async () => {
  s = await scratch('cairn-tarpack-');
  tree = join(s.dir, 'tree');
  await mkdir(tree);
});
afterEach(async () => {
  await s.cleanup();
});

/** Runs a packer to the end, `size` bytes per buffer; pushes `rels` first in changes mode. */
function drain(p: TarPacker, size = 256 * 1024, rels?: string[], deletes?: number[]): Buffer {
  if (rels) {
    p.push(rels, Uint8Array.from(deletes ?? rels.map(() => 0)));
    p.end();
  }
  const parts: Buffer[] = [];
  try {
    for (;;) {
      const buf = Buffer.alloc(size, 0xee);
      const used = p.fill(buf, 0);
      if (used > 0) parts.push(buf.subarray(0, used));
      if (used < size) break;
    }
  } finally {
    p.close();
  }
  return Buffer.concat(parts);
}

interface Listed { name: string; type: string; size: number; link: string; pax: Record<string, Buffer> }

/** A minimal reader: names (PAX path/linkpath applied), types, sizes, PAX records; checks checksums and the trailer. */
function list(tar: Buffer): Listed[] {
  const out: Listed[] = [];
  let pax: Record<string, Buffer> = {};
  let off = 0;
  for (;;) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) {
      expect(tar.length).toBe(off + 1024);
      expect(tar.subarray(off).every((b) => b === 0)).toBe(true);
      return out;
    }
    let sum = 8 * 0x20;
    for (let i = 0; i < 512; i++) if (i < 148 || i >= 156) sum += h[i]!;
    expect(parseInt(h.toString('latin1', 148, 154), 8)).toBe(sum);
    const str = (a: number, n: number): string => { const b = h.subarray(a, a + n); const z = b.indexOf(0); return b.subarray(0, z < 0 ? n : z).toString('utf8'); };
    const size = parseInt(str(124, 12), 8);
    const type = String.fromCharCode(h[156]!);
    const body = tar.subarray(off + 512, off + 512 + size);
    off += 512 + Math.ceil(size / 512) * 512;
    if (type === 'x') {
      for (let p = 0; p < body.length;) {
        const sp = body.indexOf(0x20, p);
        const len = Number(body.toString('latin1', p, sp));
        const rec = body.subarray(sp + 1, p + len - 1);
        const eq = rec.indexOf(0x3d);
        pax[rec.toString('utf8', 0, eq)] = rec.subarray(eq + 1);
        p += len;
      }
      continue;
    }
    out.push({
      name: pax.path?.toString('utf8') ?? str(0, 100), type, size, link: pax.linkpath?.toString('utf8') ?? str(157, 100), pax,
    });
    pax = {};
  }
}

test('walk mode: GNU tar extracts the packed tree back, and the bytes do not depend on the buffer size', async () => {
  await mkdir(join(tree, 'd', 'sub'), { recursive: true });
  await writeFile(join(tree, 'empty'), '');
  const sizes = [1, 511, 512, 513, 300 * 1024 + 7];
  for (const n of sizes) await writeFile(join(tree, `f${n}`), Buffer.alloc(n, n % 251));
  const long = 'n'.repeat(90) + '/' + 'm'.repeat(60);
  await mkdir(join(tree, 'n'.repeat(90)));
  await writeFile(join(tree, long), 'long name');
  await symlink('t'.repeat(150), join(tree, 'd', 'longlink'));
  await symlink('../f1', join(tree, 'd', 'rel'));
  await writeFile(join(tree, 'd', 'sub', 'h1'), 'hard');
  await link(join(tree, 'd', 'sub', 'h1'), join(tree, 'd', 'sub', 'h2'));
  execFileSync('mkfifo', [join(tree, 'd', 'fifo')]);
  mknodSync(join(tree, 'd', 'null'), constants.S_IFCHR | 0o640, 1, 3);
  lsetxattrSync(join(tree, 'f1'), 'user.bin', Buffer.from([0, 0xff, 0x3d, 10]));
  lsetxattrSync(join(tree, 'd'), 'user.dir', Buffer.from('on a dir'));
  lutimesNsSync(join(tree, 'f512'), 1_700_000_000_123_456_789n, 1_700_000_000_123_456_789n);
  await utimes(join(tree, 'f513'), 1000, 1000);

  const tar = drain(openTarPacker(tree, 0, true));
  for (const size of [512, 777, 4096, 300 * 1024]) expect(drain(openTarPacker(tree, 0, true), size).equals(tar)).toBe(true);

  const names = list(tar).map((e) => e.name);
  expect(names).toEqual([
    'd/', 'd/fifo', 'd/longlink', 'd/null', 'd/rel', 'd/sub/', 'd/sub/h1', 'd/sub/h2',
    'empty', 'f1', 'f300007', 'f511', 'f512', 'f513', 'n'.repeat(90) + '/', long,
  ].map((n) => n.replace('f300007', `f${300 * 1024 + 7}`)));
  const h2 = list(tar).find((e) => e.name === 'd/sub/h2')!;
  expect([h2.type, h2.link]).toEqual(['1', 'd/sub/h1']);

  const out = join(s.dir, 'out');
  await mkdir(out);
  await writeFile(join(s.dir, 'l.tar'), tar);
  execFileSync('tar', ['--xattrs', '--xattrs-include=*', '-xpf', join(s.dir, 'l.tar'), '-C', out]);
  for (const n of sizes) expect((await readFile(join(out, `f${n}`))).equals(Buffer.alloc(n, n % 251))).toBe(true);
  expect(await readFile(join(out, long), 'utf8')).toBe('long name');
  expect(await readlink(join(out, 'd', 'longlink'))).toBe('t'.repeat(150));
  expect(await readlink(join(out, 'd', 'rel'))).toBe('../f1');
  expect((await lstat(join(out, 'd', 'sub', 'h2'))).ino).toBe((await lstat(join(out, 'd', 'sub', 'h1'))).ino);
  expect((await lstat(join(out, 'd', 'fifo'))).isFIFO()).toBe(true);
  const dev = await lstat(join(out, 'd', 'null'));
  expect([dev.isCharacterDevice(), dev.rdev, dev.mode & 0o7777]).toEqual([true, (await lstat('/dev/null')).rdev, 0o640]);
  expect(lgetxattrSync(join(out, 'f1'), 'user.bin')).toEqual(Buffer.from([0, 0xff, 0x3d, 10]));
  expect(lgetxattrSync(join(out, 'd'), 'user.dir')?.toString()).toBe('on a dir');
  expect((await lstat(join(out, 'f512'), { bigint: true })).mtimeNs).toBe(1_700_000_000_123_456_789n);
  expect((await lstat(join(out, 'f513'))).mtimeMs).toBe(1_000_000);
});

test('walk mode sorts names as JS sort() does (UTF-16 units), not by UTF-8 bytes', async () => {
  const names = ['b', 'a-b', 'a', '\u{1F600}', '\uE000', 'é', 'A', '\u00ff\u{10400}'];
  for (const n of names) await writeFile(join(tree, n), n);
  await mkdir(join(tree, 'a.d'));
  const listed = list(drain(openTarPacker(tree, 0, true))).map((e) => e.name);
  expect(listed).toEqual([...names, 'a.d'].sort().map((n) => (n === 'a.d' ? 'a.d/' : n)));
  // UTF-8 byte order would put U+E000 before the emoji.
  expect(listed.indexOf('\u{1F600}')).toBeLessThan(listed.indexOf('\uE000'));
});

test('PACK_OVERLAY: a 0/0 char device becomes .wh.<name>, an opaque dir gets .wh..wh..opq, overlay xattrs stay out', async () => {
  await mkdir(join(tree, 'op'));
  await writeFile(join(tree, 'op', 'x'), 'x');
  lsetxattrSync(join(tree, 'op'), 'trusted.overlay.opaque', Buffer.from('y'));
  lsetxattrSync(join(tree, 'op'), 'trusted.overlay.origin', Buffer.from('o'));
  lsetxattrSync(join(tree, 'op'), 'user.kept', Buffer.from('k'));
  mknodSync(join(tree, 'gone'), constants.S_IFCHR, 0, 0);
  const overlay = list(drain(openTarPacker(tree, PACK_OVERLAY, true)));
  expect(overlay.map((e) => `${e.type} ${e.name}`)).toEqual(['0 .wh.gone', '5 op/', '0 op/.wh..wh..opq', '0 op/x']);
  expect(Object.keys(overlay[1]!.pax).filter((k) => k.startsWith('SCHILY.'))).toEqual(['SCHILY.xattr.user.kept']);
  // Without the flag the device and the directory are packed as what they are.
  const plain = list(drain(openTarPacker(tree, 0, true)));
  expect(plain.map((e) => `${e.type} ${e.name}`)).toEqual(['3 gone', '5 op/', '0 op/x']);
});

test('changes mode: pushed paths in the given order, deletions as whiteouts, a later path of an inode as a hardlink', async () => {
  await mkdir(join(tree, 'a', 'b'), { recursive: true });
  await writeFile(join(tree, 'a', 'b', 'f'), 'f');
  await link(join(tree, 'a', 'b', 'f'), join(tree, 'g'));
  await writeFile(join(tree, 'a-z'), 'az');
  const rels = ['a', 'a-z', 'a/b', 'a/b/f', 'a/old', 'g', 'zz/deleted'];
  const listed = list(drain(openTarPacker(tree), 1000, rels, [0, 0, 0, 0, 1, 0, 1]));
  expect(listed.map((e) => `${e.type} ${e.name} ${e.link}`)).toEqual([
    '5 a/ ', '0 a-z ', '5 a/b/ ', '0 a/b/f ', '0 a/.wh.old ', '1 g a/b/f', '0 zz/.wh.deleted ',
  ]);
});

test('changes mode: a missing path, or one through a symlinked directory, is ERR_LAYER_NOT_FOUND', async () => {
  await mkdir(join(tree, 'real'));
  await writeFile(join(tree, 'real', 'x'), 'x');
  await symlink('real', join(tree, 'via'));
  for (const rel of ['nope', 'real/nope', 'nope/x', 'via/x', 'real/x/y']) {
    expect(() => drain(openTarPacker(tree), 4096, ['real', rel])).toThrow(expect.objectContaining({ cairnCode: 'ERR_LAYER_NOT_FOUND', subject: rel }));
  }
});

test('a file that shrinks after its header was written fails the packer with ERR_INVALID_ARCHIVE and closes it', async () => {
  await writeFile(join(tree, 'big'), Buffer.alloc(100_000, 1));
  const p = openTarPacker(tree);
  p.push(['big'], new Uint8Array(1));
  p.end();
  expect(p.fill(Buffer.alloc(4096), 0)).toBe(4096); // its header(s) and the first part of the content
  await truncate(join(tree, 'big'), 10_000);
  const buf = Buffer.alloc(64 * 1024);
  expect(() => p.fill(buf, 0)).toThrow(expect.objectContaining({ cairnCode: 'ERR_INVALID_ARCHIVE', subject: 'big', detail: 'short:100000' }));
  expect(() => p.fill(buf, 0)).toThrow(/closed/);
  p.close();
});

test("an xattr name with '=' cannot go in a PAX record: ERR_INVALID_ARCHIVE naming it", async () => {
  await writeFile(join(tree, 'f'), 'f');
  lsetxattrSync(join(tree, 'f'), 'user.a=b', Buffer.from('v'));
  expect(llistxattrSync(join(tree, 'f'))).toContain('user.a=b');
  expect(() => drain(openTarPacker(tree, 0, true))).toThrow(expect.objectContaining({ cairnCode: 'ERR_INVALID_ARCHIVE', detail: 'xattr:user.a=b' }));
});

test('fill appends at the offset it is given and push after end is refused', async () => {
  await writeFile(join(tree, 'f'), 'content');
  const whole = drain(openTarPacker(tree, 0, true));
  const p = openTarPacker(tree, 0, true);
  const buf = Buffer.alloc(whole.length + 100, 0xee);
  expect(p.fill(buf, 100)).toBe(100 + whole.length);
  expect(buf.subarray(100).equals(whole)).toBe(true);
  expect(buf[99]).toBe(0xee);
  expect(() => p.push(['f'], new Uint8Array(1))).toThrow(/after end/);
  p.close();
});
