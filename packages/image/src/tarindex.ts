// Random access into an uncompressed tar file (a docker-save tarball, an OCI archive):
// walk the headers, seeking over content, and note where each regular file's content
// lies. docker save writes manifest.json last, so a streaming reader would have to
// buffer every layer before knowing what they are; with an index each blob is read when
// it is needed, and several can be read at once.
import type { FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { CairnError } from '@cairnfs/core';

export interface IndexedFile {
  offset: number;
  size: number;
}

function field(block: Buffer, start: number, len: number): string {
  const end = block.indexOf(0, start);
  return block.subarray(start, end < 0 || end > start + len ? start + len : end).toString('utf8');
}

function num(block: Buffer, start: number, len: number): number {
  if (block[start]! & 0x80) { // GNU base-256
    let v = 0;
    for (let i = start + 1; i < start + len; i++) v = v * 256 + block[i]!;
    return v;
  }
  const s = field(block, start, len).trim();
  return s === '' ? 0 : parseInt(s, 8);
}

function paxValue(body: Buffer, key: string): string | undefined {
  let i = 0;
  let found: string | undefined;
  while (i < body.length) {
    const sp = body.indexOf(0x20, i);
    if (sp < 0) break;
    const len = parseInt(body.subarray(i, sp).toString('ascii'), 10);
    if (!(len > 0)) break;
    const rec = body.subarray(sp + 1, i + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (rec.slice(0, eq) === key) found = rec.slice(eq + 1);
    i += len;
  }
  return found;
}

const invalid = (what: string) => new CairnError('ERR_INVALID_ARCHIVE', `the image archive is corrupt or truncated: ${what}`);

/** Most bytes of one PAX or GNU long-name body (the layer parser's bound too). */
export const MAX_META_BYTES = 1 << 20;
/** Most entries an image archive may hold: a docker save of hundreds of images has thousands. */
export const MAX_ARCHIVE_ENTRIES = 1 << 18;
/** Most links followed to reach one file (the kernel's MAXSYMLINKS). */
const MAX_HOPS = 40;

/**
 * Where a link entry of the archive leads, resolved inside the archive only: a symlink's
 * target relative to its directory ('..' stops at the archive root, an absolute target
 * starts there, as openat2 RESOLVE_IN_ROOT does on disk), a hardlink's target as an
 * archive path. docker save links each duplicate layer.tar to the first copy.
 */
interface Link { target: string; hard: boolean }

function resolveLinks(files: Map<string, IndexedFile>, links: Map<string, Link>): void {
  for (const [name, link] of links) {
    let at = name;
    let hop: Link | undefined = link;
    for (let n = 0; hop && n < MAX_HOPS; n++) {
      at = hop.hard ? posix.normalize(`/${hop.target}`).slice(1) : posix.normalize(`/${posix.dirname(at)}/${hop.target}`).slice(1);
      hop = links.get(at);
    }
    const file = hop ? undefined : files.get(at);
    if (file) files.set(name, file); // else: a dangling link is a file the archive does not have
  }
}

/** Regular files of the tar by normalised path (no leading './' or '/'), links resolved to them. */
export async function indexTar(fh: FileHandle): Promise<Map<string, IndexedFile>> {
  const files = new Map<string, IndexedFile>();
  const links = new Map<string, Link>();
  const { size: total } = await fh.stat();
  const block = Buffer.alloc(512);
  let pos = 0;
  let entries = 0;
  let longName: string | undefined;
  let longLink: string | undefined;
  let paxPath: string | undefined;
  let paxLink: string | undefined;
  let paxSize: number | undefined;
  while (pos + 512 <= total) {
    const { bytesRead } = await fh.read(block, 0, 512, pos);
    if (bytesRead < 512) throw invalid(`short header at byte ${pos}`);
    if (block.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
    if (sum !== num(block, 148, 8)) throw invalid(`header checksum mismatch at byte ${pos}; is this a tar file?`);
    if (++entries > MAX_ARCHIVE_ENTRIES) throw invalid(`more than ${MAX_ARCHIVE_ENTRIES} entries; not an image archive`);
    const flag = String.fromCharCode(block[156] || 0x30);
    let size = num(block, 124, 12);
    if (!Number.isSafeInteger(size) || size < 0) throw invalid(`entry size at byte ${pos}`);
    const dataAt = pos + 512;
    if (flag === 'x' || flag === 'L' || flag === 'K') {
      if (size > MAX_META_BYTES) throw invalid(`a ${flag === 'x' ? 'PAX header' : 'GNU long name'} of ${size} bytes at byte ${pos} (at most ${MAX_META_BYTES})`);
      const body = Buffer.alloc(size);
      await fh.read(body, 0, size, dataAt);
      if (flag === 'L') longName = field(body, 0, size);
      else if (flag === 'K') longLink = field(body, 0, size);
      else {
        paxPath = paxValue(body, 'path');
        paxLink = paxValue(body, 'linkpath');
        const s = paxValue(body, 'size');
        paxSize = s === undefined ? undefined : Number(s);
        if (paxSize !== undefined && !(Number.isSafeInteger(paxSize) && paxSize >= 0)) throw invalid(`PAX size ${s} at byte ${pos}`);
      }
    } else if (flag !== 'g') {
      if (paxSize !== undefined) size = paxSize;
      const prefix = field(block, 345, 155);
      const name = paxPath ?? longName ?? (prefix ? `${prefix}/${field(block, 0, 100)}` : field(block, 0, 100));
      const key = posix.normalize(`/${name}`).slice(1);
      // A later entry of the same name replaces the earlier, as extracting the tar would.
      files.delete(key);
      links.delete(key);
      if (flag === '0' || flag === '7') files.set(key, { offset: dataAt, size });
      else if (flag === '1' || flag === '2') links.set(key, { target: paxLink ?? longLink ?? field(block, 157, 100), hard: flag === '1' });
      longName = longLink = paxPath = paxLink = paxSize = undefined;
    }
    pos = dataAt + Math.ceil(size / 512) * 512;
  }
  if (pos > total) throw invalid('the last entry runs past the end of the file');
  resolveLinks(files, links);
  return files;
}
