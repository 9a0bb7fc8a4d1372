// Layer tars made by other tools: GNU tar (gnu and pax formats) and bsdtar (libarchive:
// pax and gnutar formats) pack the same tree; applyLayer must rebuild it exactly, and the
// hostile variants those tools can be told to write (-P keeps '../' and absolute member
// names) must be refused. Go's archive/tar is covered through a real `docker save` in
// packages/overlay2/test/dockerd.test.ts and packages/image/test.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { applyLayer } from '@cairnfs/archive';
import { lsetxattrSync } from '@cairnfs/sys';
import { fingerprint, isRoot, removeDir, snapshotTree, tempDir, type NodeFacts } from './helpers.js';

const hasBsdtar = (() => { try { execFileSync('bsdtar', ['--version']); return true; } catch { return false; } })();

/** A tree with what tar formats disagree on: long names, links, modes, owners, xattrs, sparse. */
function makeTree(root: string): void {
  const long = path.join(root, 'a'.repeat(60), 'b'.repeat(60), 'c'.repeat(60));
  fs.mkdirSync(long, { recursive: true });
  fs.writeFileSync(path.join(long, 'f'.repeat(120)), 'deep and long\n');
  fs.mkdirSync(path.join(root, 'bin'));
  fs.writeFileSync(path.join(root, 'bin/tool'), Buffer.alloc(300_000, 7));
  fs.chmodSync(path.join(root, 'bin/tool'), 0o4755);
  fs.linkSync(path.join(root, 'bin/tool'), path.join(root, 'bin/tool-hardlink'));
  fs.symlinkSync('tool', path.join(root, 'bin/tool-symlink'));
  fs.writeFileSync(path.join(root, 'owned'), 'by someone else\n');
  if (isRoot) fs.chownSync(path.join(root, 'owned'), 1234, 5678);
  fs.writeFileSync(path.join(root, 'with-xattr'), 'x');
  lsetxattrSync(path.join(root, 'with-xattr'), 'user.cairn', Buffer.from('value'));
  fs.mkdirSync(path.join(root, 'empty'), { mode: 0o750 });
  fs.chmodSync(path.join(root, 'empty'), 0o750);
  const sparse = fs.openSync(path.join(root, 'sparse'), 'w');
  fs.writeSync(sparse, 'start', 0);
  fs.writeSync(sparse, 'end', 8 << 20);
  fs.closeSync(sparse);
  // Whole-second times, so that formats without sub-second mtimes compare too.
  const walk = (p: string): void => {
    const st = fs.lstatSync(p);
    if (st.isDirectory()) for (const n of fs.readdirSync(p)) walk(path.join(p, n));
    fs.lutimesSync(p, 1_700_000_000, 1_700_000_000);
  };
  walk(root);
}

/** `sparse`: the format as this tool writes it records holes (libarchive's gnutar writer does not). */
interface Producer { name: string; args: (out: string) => [string, string[]]; xattrs: boolean; sparse: boolean }

const producers: Producer[] = [
  { name: 'GNU tar --format=gnu', args: (out) => ['tar', ['--format=gnu', '--sparse', '--numeric-owner', '-cf', out, '.']], xattrs: false, sparse: true },
  { name: 'GNU tar --format=pax --xattrs', args: (out) => ['tar', ['--format=pax', '--sparse', '--xattrs', '--xattrs-include=*', '--numeric-owner', '-cf', out, '.']], xattrs: true, sparse: true },
  ...(hasBsdtar ? [
    { name: 'bsdtar --format pax', args: (out: string) => ['bsdtar', ['--format', 'pax', '--xattrs', '--numeric-owner', '-cf', out, '.']] as [string, string[]], xattrs: true, sparse: true },
    { name: 'bsdtar --format gnutar', args: (out: string) => ['bsdtar', ['--format', 'gnutar', '--numeric-owner', '-cf', out, '.']] as [string, string[]], xattrs: false, sparse: false },
  ] : []),
];

/** What must survive every format: drop the root's own facts and, where the format has none, xattrs. */
function comparable(tree: Record<string, NodeFacts>, xattrs: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [p, f] of Object.entries(tree)) {
    if (p === '.') continue;
    out[p] = { ...f, xattrs: xattrs ? f.xattrs : {} };
  }
  return out;
}

describe('layer tars from other tools', () => {
  let work: string;
  beforeEach(() => { work = tempDir('tools'); });
  afterEach(() => removeDir(work));

  test('bsdtar is installed (scripts/install-deps.sh: libarchive-tools)', () => {
    if (!hasBsdtar && process.env.CAIRN_REQUIRE_ALL === '1') throw new Error('bsdtar missing: run scripts/install-deps.sh');
    expect(producers.length).toBe(hasBsdtar ? 4 : 2);
  });

  for (const p of producers) {
    test(`${p.name}: applyLayer rebuilds the tree exactly (long names, hardlink, symlink, setuid, owner, sparse${p.xattrs ? ', xattrs' : ''})`, async () => {
      const src = path.join(work, 'src');
      const dst = path.join(work, 'dst');
      fs.mkdirSync(src);
      fs.mkdirSync(dst);
      makeTree(src);
      const tarFile = path.join(work, 'layer.tar');
      const [cmd, args] = p.args(tarFile);
      execFileSync(cmd, args, { cwd: src, stdio: ['ignore', 'ignore', 'pipe'] });
      await applyLayer(dst, fs.createReadStream(tarFile));
      expect(comparable(snapshotTree(dst), p.xattrs)).toEqual(comparable(snapshotTree(src), p.xattrs));
      // A hole the tar recorded stays a hole (not 8 MiB of written zeros).
      if (p.sparse) expect(fs.statSync(path.join(dst, 'sparse')).blocks * 512).toBeLessThan(1 << 20);
    });
  }

  const hostile: Array<{ name: string; tool: string; member: (canary: string) => string }> = [
    { name: "GNU tar -P with a '../' member", tool: 'tar', member: () => '../canary/secret' },
    { name: 'GNU tar -P with an absolute member', tool: 'tar', member: (canary) => path.join(canary, 'secret') },
    ...(hasBsdtar ? [
      { name: "bsdtar -P with a '../' member", tool: 'bsdtar', member: () => '../canary/secret' },
      { name: 'bsdtar -P with an absolute member', tool: 'bsdtar', member: (canary: string) => path.join(canary, 'secret') },
    ] : []),
  ];
  for (const h of hostile) {
    test(`${h.name} is refused with ERR_UNSAFE_ARCHIVE and the canary is untouched`, async () => {
      const canary = path.join(work, 'canary');
      const layer = path.join(work, 'layer');
      const cwd = path.join(work, 'cwd');
      for (const d of [canary, layer, cwd]) fs.mkdirSync(d);
      fs.writeFileSync(path.join(canary, 'secret'), 'do not touch');
      const before = fingerprint(canary);
      const tarFile = path.join(work, 'evil.tar');
      execFileSync(h.tool, ['-P', '-cf', tarFile, h.member(canary)], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
      const err = await applyLayer(layer, fs.createReadStream(tarFile)).catch((e: unknown) => e);
      expect(err).toMatchObject({ name: 'CairnError', code: 'ERR_UNSAFE_ARCHIVE' });
      expect(fingerprint(canary)).toBe(before);
      expect(fs.readdirSync(layer)).toEqual([]);
    });
  }
});
