// Shared helpers for the archive tests: temp dirs, GNU tar, tree snapshots.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { lgetxattrSync, llistxattrSync } from '@cairnfs/sys';
import { readTar, type TarEntry } from '@cairnfs/archive';

export function tempDir(label: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `cairn-archive-${label}-`));
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Runs GNU tar; returns stdout. */
export function gnuTar(args: string[], cwd: string): Buffer {
  return execFileSync('tar', args, { cwd, maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'pipe'] });
}

export interface ReadEntry {
  header: TarEntry;
  data: Buffer;
}

/** Reads a whole (small) archive into memory. */
export async function readAll(input: Buffer | Readable | AsyncIterable<Uint8Array>): Promise<ReadEntry[]> {
  const source = Buffer.isBuffer(input) ? chunked(input, 1000) : input;
  const out: ReadEntry[] = [];
  for await (const { header, body } of readTar(source)) {
    const chunks: Buffer[] = [];
    for await (const c of body) chunks.push(Buffer.from(c));
    out.push({ header, data: Buffer.concat(chunks) });
  }
  return out;
}

/** Feeds a buffer in odd-sized chunks, so block boundaries fall mid-chunk. */
export function chunked(buf: Buffer, size: number): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) parts.push(buf.subarray(i, i + size));
  return Readable.from(parts, { objectMode: false });
}

export async function streamToBuffer(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

export interface NodeFacts {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  sha?: string;
  mtimeNs: string;
  rdev?: string;
  link?: string;
  xattrs: Record<string, string>;
  /** Paths sharing this node's inode (hardlink identity), sorted. */
  links?: string[];
}

/** Everything we compare about a tree: type, mode, owner, size, content, mtime ns, rdev, link, xattrs, hardlinks. */
export function snapshotTree(root: string, opts: { skipRootTimes?: boolean; xattrFilter?: (n: string) => boolean } = {}): Record<string, NodeFacts> {
  const out: Record<string, NodeFacts> = {};
  const inodes = new Map<string, string[]>();
  const walk = (rel: string): void => {
    const abs = rel === '' ? root : path.join(root, rel);
    const st = fs.lstatSync(abs, { bigint: true });
    const facts: NodeFacts = {
      type: st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink'
        : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : st.isFIFO() ? 'fifo' : 'other',
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: st.isFile() ? Number(st.size) : 0,
      mtimeNs: st.isSymbolicLink() || (rel === '' && opts.skipRootTimes) ? '-' : st.mtimeNs.toString(),
      xattrs: {},
    };
    if (st.isFile()) facts.sha = createHash('sha256').update(fs.readFileSync(abs)).digest('hex');
    if (st.isSymbolicLink()) {
      facts.link = fs.readlinkSync(abs);
      facts.mtimeNs = st.mtimeNs.toString();
    }
    if (st.isCharacterDevice() || st.isBlockDevice()) facts.rdev = st.rdev.toString();
    for (const name of llistxattrSync(abs).sort()) {
      if (opts.xattrFilter && !opts.xattrFilter(name)) continue;
      facts.xattrs[name] = lgetxattrSync(abs, name)!.toString('hex');
    }
    if (!st.isDirectory() && st.nlink > 1n) {
      const key = `${st.ino}`;
      const list = inodes.get(key) ?? [];
      list.push(rel);
      inodes.set(key, list);
      facts.links = list;
    }
    out[rel === '' ? '.' : rel] = facts;
    if (st.isDirectory()) for (const name of fs.readdirSync(abs).sort()) walk(rel === '' ? name : `${rel}/${name}`);
  };
  walk('');
  for (const list of inodes.values()) list.sort();
  return out;
}

/** Byte-for-byte fingerprint of a directory (for canaries): paths, types, contents, modes. */
export function fingerprint(root: string): string {
  const h = createHash('sha256');
  const walk = (abs: string, rel: string): void => {
    const st = fs.lstatSync(abs);
    h.update(`${rel}\0${st.mode}\0${st.uid}\0${st.gid}\0${st.size}\0${st.mtimeMs}\0`);
    if (st.isFile()) h.update(fs.readFileSync(abs));
    if (st.isSymbolicLink()) h.update(fs.readlinkSync(abs));
    if (st.isDirectory()) for (const n of fs.readdirSync(abs).sort()) walk(path.join(abs, n), `${rel}/${n}`);
  };
  walk(root, '');
  return h.digest('hex');
}

export const isRoot = process.getuid?.() === 0;
