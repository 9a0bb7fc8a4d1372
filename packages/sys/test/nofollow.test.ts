// The fallbacks of native/nofollow.cc, for kernels without fchmodat2 (Linux 6.6) and the
// *xattrat calls (6.13): modes given at mknod time by a helper thread with its own umask,
// xattrs set and read by name on a helper thread whose cwd is the directory fd. They are
// forced here (legacyKernel / PACK_LEGACY_KERNEL) and must give exactly what the new calls
// give: the same tree from an apply, the same bytes from an export.
import { lstatSync, mkdirSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { PACK_LEGACY_KERNEL, PACK_PATH_ORDER, lgetxattrSync, llistxattrSync, openLayerApplier, openTarPacker, type LayerApplierOptions } from '@cairnfs/sys';
import { testAsRoot } from '@cairnfs/testkit';
import { scratch, type Scratch } from './helpers.js';
import { entry, header, pax, paxRecord, trailer } from './tarbuild.js';

let s: Scratch;
beforeEach(async () => { s = await scratch(); });
afterEach(async () => { await s.cleanup(); });

const OPTS: LayerApplierOptions = { whiteouts: 'delete', noDevices: false, ownership: true, euid: 0, egid: 0, umask: 0o022 };

function withXattr(name: string, value: string): Buffer {
  return pax(paxRecord(`SCHILY.xattr.${name}`, value));
}

/** Every node below `dir`: type, mode, owner, mtime, link target, xattrs. */
function tree(dir: string, rel = ''): Record<string, string> {
  const out: Record<string, string> = {};
  const path = rel === '' ? dir : join(dir, rel);
  const st = lstatSync(path, { bigint: true });
  const xattrs = llistxattrSync(path).sort().map((k) => `${k}=${lgetxattrSync(path, k)?.toString('hex')}`);
  out[rel || '.'] = JSON.stringify({
    mode: st.mode.toString(8), uid: String(st.uid), gid: String(st.gid), rdev: String(st.rdev), mtime: String(st.mtimeNs),
    link: st.isSymbolicLink() ? readlinkSync(path) : null, xattrs,
  });
  if (st.isDirectory()) {
    for (const name of readdirSync(path).sort()) Object.assign(out, tree(dir, rel === '' ? name : `${rel}/${name}`));
  }
  return out;
}

function apply(dir: string, tar: Buffer, opts: LayerApplierOptions): void {
  mkdirSync(dir);
  const a = openLayerApplier(dir, opts);
  try {
    a.write(tar);
    a.finish();
  } finally {
    a.close();
  }
}

// Owner 1234 throughout, so the chown path runs (and clears setuid/setgid before the chmod).
const ids = { uid: 1234, gid: 1234 };

/** A layer with every kind of node, odd modes, and xattrs where the fallbacks act. */
function layerTar(): Buffer {
  return Buffer.concat([
    entry('d', '', { type: '5', mode: 0o750, ...ids }),
    withXattr('trusted.cairn', 'on-dir'), entry('d/x', '', { type: '5', mode: 0o711, ...ids }),
    entry('d/fifo', '', { type: '6', mode: 0o640, ...ids }),
    entry('d/fifo-sticky', '', { type: '6', mode: 0o1777, ...ids }),
    withXattr('trusted.cairn', 'on-fifo'), entry('d/fifo-x', '', { type: '6', mode: 0o666, ...ids }),
    entry('d/null', '', { type: '3', mode: 0o666, ...ids }),
    withXattr('trusted.cairn', 'on-link'), entry('d/link', '', { type: '2', linkname: '../nowhere', ...ids }),
    withXattr('trusted.cairn', 'on-file'), entry('d/file', 'content', { mode: 0o4755, ...ids }),
    trailer(),
  ]);
}

testAsRoot('an apply with the legacy fallbacks makes exactly the tree the new calls make (modes, owners, xattrs, times)', () => {
  const tar = layerTar();
  apply(join(s.dir, 'new'), tar, OPTS);
  apply(join(s.dir, 'old'), tar, { ...OPTS, legacyKernel: true });
  // (the layer root itself is not in the tar: its mtime is the mkdir's)
  const made = tree(join(s.dir, 'new', 'd'));
  expect(tree(join(s.dir, 'old', 'd'))).toEqual(made);
  expect(JSON.parse(made['fifo-sticky']!)).toMatchObject({ mode: '11777', uid: '1234' });
  expect(JSON.parse(made['fifo-x']!).xattrs).toEqual([`trusted.cairn=${Buffer.from('on-fifo').toString('hex')}`]);
  expect(JSON.parse(made['link']!).xattrs).toEqual([`trusted.cairn=${Buffer.from('on-link').toString('hex')}`]);
  expect(JSON.parse(made['x']!)).toMatchObject({ mode: '40711', xattrs: [`trusted.cairn=${Buffer.from('on-dir').toString('hex')}`] });
  expect(JSON.parse(made['file']!)).toMatchObject({ mode: '104755', uid: '1234' });
});

testAsRoot('legacy fallback: a device whose setuid bit a chown would clear is refused (ERR_NOT_SUPPORTED), not made wrong', () => {
  const tar = Buffer.concat([header('dev', { type: '3', mode: 0o4666, ...ids }), trailer()]);
  apply(join(s.dir, 'new'), tar, OPTS);
  expect(lstatSync(join(s.dir, 'new', 'dev')).mode & 0o7777).toBe(0o4666);
  let err: unknown;
  try {
    apply(join(s.dir, 'old'), tar, { ...OPTS, legacyKernel: true });
  } catch (e) {
    err = e;
  }
  expect(err).toMatchObject({ cairnCode: 'ERR_NOT_SUPPORTED', subject: 'dev' });
});

function pack(dir: string, flags: number): Buffer {
  const p = openTarPacker(dir, flags, true);
  const parts: Buffer[] = [];
  try {
    for (;;) {
      const buf = Buffer.alloc(64 << 10);
      const n = p.fill(buf, 0);
      parts.push(buf.subarray(0, n));
      if (n < buf.length) break;
    }
  } finally {
    p.close();
  }
  return Buffer.concat(parts);
}

testAsRoot('an export with the legacy fallbacks (xattrs read on a helper thread, files opened by name) gives the same bytes', () => {
  const dir = join(s.dir, 'tree');
  apply(dir, layerTar(), OPTS);
  const bytes = pack(dir, PACK_PATH_ORDER);
  expect(bytes.includes(Buffer.from('on-link'))).toBe(true);
  expect(bytes.includes(Buffer.from('on-fifo'))).toBe(true);
  expect(pack(dir, PACK_PATH_ORDER | PACK_LEGACY_KERNEL).equals(bytes)).toBe(true);
});
