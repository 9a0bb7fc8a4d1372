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

/** Regular files of the tar by normalised path (no leading './' or '/'). */
export async function indexTar(fh: FileHandle): Promise<Map<string, IndexedFile>> {
  const files = new Map<string, IndexedFile>();
  const { size: total } = await fh.stat();
  const block = Buffer.alloc(512);
  let pos = 0;
  let longName: string | undefined;
  let paxPath: string | undefined;
  let paxSize: number | undefined;
  while (pos + 512 <= total) {
    const { bytesRead } = await fh.read(block, 0, 512, pos);
    if (bytesRead < 512) throw invalid(`short header at byte ${pos}`);
    if (block.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
    if (sum !== num(block, 148, 8)) throw invalid(`header checksum mismatch at byte ${pos}; is this a tar file?`);
    const flag = String.fromCharCode(block[156] || 0x30);
    let size = num(block, 124, 12);
    const dataAt = pos + 512;
    if (flag === 'x' || flag === 'L') {
      const body = Buffer.alloc(size);
      await fh.read(body, 0, size, dataAt);
      if (flag === 'L') longName = field(body, 0, size);
      else {
        paxPath = paxValue(body, 'path');
        const s = paxValue(body, 'size');
        paxSize = s === undefined ? undefined : Number(s);
      }
    } else if (flag !== 'g') {
      if (paxSize !== undefined) size = paxSize;
      const prefix = field(block, 345, 155);
      const name = paxPath ?? longName ?? (prefix ? `${prefix}/${field(block, 0, 100)}` : field(block, 0, 100));
      if (flag === '0' || flag === '7') {
        const key = posix.normalize(`/${name}`).slice(1);
        files.set(key, { offset: dataAt, size });
      }
      longName = paxPath = paxSize = undefined;
    }
    pos = dataAt + Math.ceil(size / 512) * 512;
  }
  if (pos > total) throw invalid('the last entry runs past the end of the file');
  return files;
}
