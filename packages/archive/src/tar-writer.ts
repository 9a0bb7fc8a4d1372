// A small tar writer: ustar headers plus PAX records only where ustar cannot say it.
// Ours rather than tar-stream's pack because tar-stream caps uid/gid at 262143, writes
// whole-second mtimes, turns mode 0 into 0644 and encodes PAX values as UTF-8 text,
// which corrupts binary xattrs such as security.capability (measured; toolchain notes).
// Headers are deterministic: no uname/gname, no atime/ctime, fixed PAX header names,
// so the same tree always packs to the same bytes.
import { Readable } from 'node:stream';
import { CairnError } from '@cairnfs/core';
import type { TarEntryType } from './entry.js';
import { encodePaxRecord } from './pax.js';
import { BLOCK, F, formatPaxTime, octalMax, sealChecksum, writeNumber } from './tar-fields.js';

/** What the writer needs to know about an entry. */
export interface TarHeaderInput {
  /** Relative path; a directory gets its trailing '/' added if missing. */
  name: string;
  type: TarEntryType;
  /** Permission bits with setuid/setgid/sticky; other bits are dropped. */
  mode: number;
  uid?: number;
  gid?: number;
  /** Content bytes (files only). */
  size?: number;
  mtimeNs?: bigint;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Written as `SCHILY.xattr.<name>` PAX records, values byte for byte. */
  xattrs?: ReadonlyMap<string, Uint8Array>;
}

/** An entry to pack: its header and, for files, content of exactly `header.size` bytes. */
export interface TarSourceEntry {
  header: TarHeaderInput;
  body?: Uint8Array | AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
}

const TYPEFLAG: Record<TarEntryType, number> = {
  file: 0x30, hardlink: 0x31, symlink: 0x32, char: 0x33, block: 0x34, dir: 0x35, fifo: 0x36,
};

const ZEROES = Buffer.alloc(2 * BLOCK);

/** The end-of-archive marker: two zero blocks. */
export function tarTrailer(): Buffer {
  return Buffer.alloc(2 * BLOCK);
}

/**
 * Encodes the header block(s) of one entry: a PAX 'x' header when needed (long name or
 * link, ids or size beyond octal, fractional or out-of-range mtime, xattrs), then the
 * ustar header.
 */
export function encodeHeader(h: TarHeaderInput): Buffer {
  const name = h.type === 'dir' && !h.name.endsWith('/') ? h.name + '/' : h.name;
  const uid = h.uid ?? 0;
  const gid = h.gid ?? 0;
  const size = h.type === 'file' ? h.size ?? 0 : 0;
  const mtimeNs = h.mtimeNs ?? 0n;
  let sec = mtimeNs / 1_000_000_000n;
  if (mtimeNs < 0n && mtimeNs % 1_000_000_000n !== 0n) sec -= 1n; // floor for times before 1970
  const linkname = h.linkname ?? '';
  const records: Buffer[] = [];

  const nameBytes = Buffer.from(name, 'utf8');
  const linkBytes = Buffer.from(linkname, 'utf8');
  if (nameBytes.length > F.name[1]) records.push(encodePaxRecord('path', nameBytes));
  if (linkBytes.length > F.linkname[1]) records.push(encodePaxRecord('linkpath', linkBytes));
  if (uid > octalMax(F.uid[1])) records.push(encodePaxRecord('uid', String(uid)));
  if (gid > octalMax(F.gid[1])) records.push(encodePaxRecord('gid', String(gid)));
  if (size > octalMax(F.size[1])) records.push(encodePaxRecord('size', String(size)));
  if (mtimeNs % 1_000_000_000n !== 0n || sec < 0n || sec > BigInt(octalMax(F.mtime[1]))) {
    records.push(encodePaxRecord('mtime', formatPaxTime(mtimeNs)));
  }
  if (h.xattrs) {
    for (const key of [...h.xattrs.keys()].sort()) {
      if (key.includes('=') || key.includes('\0')) {
        throw new CairnError('ERR_INVALID_ARCHIVE', `Cannot pack xattr "${key}" of ${name}: the name cannot be written in a PAX record.`, { subject: name });
      }
      const v = h.xattrs.get(key)!;
      records.push(encodePaxRecord('SCHILY.xattr.' + key, Buffer.from(v.buffer, v.byteOffset, v.byteLength)));
    }
  }

  const main = Buffer.alloc(BLOCK);
  nameBytes.copy(main, F.name[0], 0, Math.min(nameBytes.length, F.name[1]));
  writeNumber(main, F.mode[0], F.mode[1], h.mode & 0o7777);
  writeNumber(main, F.uid[0], F.uid[1], uid);
  writeNumber(main, F.gid[0], F.gid[1], gid);
  writeNumber(main, F.size[0], F.size[1], size);
  writeNumber(main, F.mtime[0], F.mtime[1], Number(sec));
  main[F.typeflag[0]] = TYPEFLAG[h.type];
  linkBytes.copy(main, F.linkname[0], 0, Math.min(linkBytes.length, F.linkname[1]));
  main.write('ustar\x0000', F.magic[0], 'latin1');
  writeNumber(main, F.devmajor[0], F.devmajor[1], h.devmajor ?? 0);
  writeNumber(main, F.devminor[0], F.devminor[1], h.devminor ?? 0);
  sealChecksum(main);
  if (records.length === 0) return main;

  const pax = Buffer.concat(records);
  const paxHeader = Buffer.alloc(BLOCK);
  const base = name.replace(/\/$/, '').split('/').pop()!.replace(/[^\x20-\x7e]/g, '_').slice(0, 80);
  paxHeader.write('PaxHeaders/' + base, F.name[0], 'latin1');
  writeNumber(paxHeader, F.mode[0], F.mode[1], 0o644);
  writeNumber(paxHeader, F.uid[0], F.uid[1], 0);
  writeNumber(paxHeader, F.gid[0], F.gid[1], 0);
  writeNumber(paxHeader, F.size[0], F.size[1], pax.length);
  writeNumber(paxHeader, F.mtime[0], F.mtime[1], 0);
  paxHeader[F.typeflag[0]] = 0x78; // 'x'
  paxHeader.write('ustar\x0000', F.magic[0], 'latin1');
  writeNumber(paxHeader, F.devmajor[0], F.devmajor[1], 0);
  writeNumber(paxHeader, F.devminor[0], F.devminor[1], 0);
  sealChecksum(paxHeader);
  const pad = (BLOCK - (pax.length % BLOCK)) % BLOCK;
  return Buffer.concat([paxHeader, pax, ZEROES.subarray(0, pad), main]);
}

const NS = 1_000_000_000n;
const OCTAL_MAX_8 = octalMax(8);
const OCTAL_MAX_12 = octalMax(12);

/**
 * encodeHeader's bytes, written straight into `target` at `offset` with no per-entry
 * Buffer: returns the number of bytes written, or 0 when they do not fit before the end
 * of `target` (the caller starts a new buffer and calls again). Entries whose header
 * needs more than a PAX mtime (long names or links, big ids or sizes, xattrs) go
 * through encodeHeader and are copied. Export calls this once per entry: a fresh
 * 512-byte Buffer per header (plus one for the PAX header and a concat) made the
 * garbage collector a large share of export's CPU.
 */
export function encodeHeaderInto(h: TarHeaderInput, target: Buffer, offset: number): number {
  const name = h.type === 'dir' && !h.name.endsWith('/') ? h.name + '/' : h.name;
  const uid = h.uid ?? 0;
  const gid = h.gid ?? 0;
  const size = h.type === 'file' ? h.size ?? 0 : 0;
  const linkname = h.linkname ?? '';
  const devmajor = h.devmajor ?? 0;
  const devminor = h.devminor ?? 0;
  if (h.xattrs !== undefined && h.xattrs.size > 0 || uid > OCTAL_MAX_8 || gid > OCTAL_MAX_8 || size > OCTAL_MAX_12
    || devmajor > OCTAL_MAX_8 || devminor > OCTAL_MAX_8 || devmajor < 0 || devminor < 0 || uid < 0 || gid < 0 || size < 0
    || utf8Length(name) > F.name[1] || utf8Length(linkname) > F.linkname[1]) {
    const head = encodeHeader(h);
    if (offset + head.length > target.length) return 0;
    head.copy(target, offset);
    return head.length;
  }
  const mtimeNs = h.mtimeNs ?? 0n;
  let sec = 0;
  let nsec = 0;
  if (mtimeNs >= 0n && mtimeNs < MAX_OCTAL_NS) {
    sec = Number(mtimeNs / NS);
    nsec = Number(mtimeNs - BigInt(sec) * NS);
  } else {
    return encodeSlow(h, target, offset); // before 1970 or past the octal field: rare, PAX-only
  }
  let pax = '';
  if (nsec !== 0) pax = paxTextRecord('mtime', paxTime(sec, nsec));
  const paxBlocks = pax === '' ? 0 : 1 + Math.ceil(pax.length / BLOCK); // pax is ASCII: length = bytes
  const total = (paxBlocks + 1) * BLOCK;
  if (offset + total > target.length) return 0;
  target.fill(0, offset, offset + total);
  let at = offset;
  // Every writer returns the sum of the bytes it wrote: the rest of each block is zero,
  // so that sum is the checksum and no second pass over the 512 bytes is needed.
  if (pax !== '') {
    const slash = name.lastIndexOf('/', name.length - 2);
    let base = name.slice(slash + 1, name.endsWith('/') ? -1 : undefined);
    if (!PRINTABLE.test(base)) base = base.replace(/[^\x20-\x7e]/g, '_');
    let sum = asciiInto(target, at, 'PaxHeaders/');
    sum += asciiInto(target, at + 11, base.length > 80 ? base.slice(0, 80) : base);
    sum += octalInto(target, at + F.mode[0], F.mode[1], 0o644);
    sum += octalInto(target, at + F.uid[0], F.uid[1], 0);
    sum += octalInto(target, at + F.gid[0], F.gid[1], 0);
    sum += octalInto(target, at + F.size[0], F.size[1], pax.length);
    sum += octalInto(target, at + F.mtime[0], F.mtime[1], 0);
    target[at + F.typeflag[0]] = 0x78; // 'x'
    sum += 0x78 + magicInto(target, at);
    sum += octalInto(target, at + F.devmajor[0], F.devmajor[1], 0);
    sum += octalInto(target, at + F.devminor[0], F.devminor[1], 0);
    sealInto(target, at, sum);
    asciiInto(target, at + BLOCK, pax);
    at += paxBlocks * BLOCK;
  }
  let sum = textInto(target, at + F.name[0], name);
  sum += octalInto(target, at + F.mode[0], F.mode[1], h.mode & 0o7777);
  sum += octalInto(target, at + F.uid[0], F.uid[1], uid);
  sum += octalInto(target, at + F.gid[0], F.gid[1], gid);
  sum += octalInto(target, at + F.size[0], F.size[1], size);
  sum += octalInto(target, at + F.mtime[0], F.mtime[1], sec);
  target[at + F.typeflag[0]] = TYPEFLAG[h.type];
  sum += TYPEFLAG[h.type] + textInto(target, at + F.linkname[0], linkname);
  sum += magicInto(target, at);
  sum += octalInto(target, at + F.devmajor[0], F.devmajor[1], devmajor);
  sum += octalInto(target, at + F.devminor[0], F.devminor[1], devminor);
  sealInto(target, at, sum);
  return total;
}

const MAX_OCTAL_NS = BigInt(OCTAL_MAX_12 + 1) * NS;

function encodeSlow(h: TarHeaderInput, target: Buffer, offset: number): number {
  const head = encodeHeader(h);
  if (offset + head.length > target.length) return 0;
  head.copy(target, offset);
  return head.length;
}

/** formatPaxTime for a non-negative time with a non-zero fraction. */
function paxTime(sec: number, nsec: number): string {
  let frac = String(nsec).padStart(9, '0');
  let end = frac.length;
  while (frac.charCodeAt(end - 1) === 0x30) end--;
  if (end !== frac.length) frac = frac.slice(0, end);
  return `${sec}.${frac}`;
}

/** UTF-8 byte length; a plain count for ASCII, which names nearly always are. */
function utf8Length(s: string): number {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return Buffer.byteLength(s, 'utf8');
  return s.length;
}

/** Writes an ASCII string byte by byte (cheaper than a Buffer.write call for header fields); returns the byte sum. */
function asciiInto(buf: Buffer, off: number, s: string): number {
  let sum = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    buf[off + i] = c;
    sum += c;
  }
  return sum;
}

/** Writes a name already known to fit its field, as UTF-8; returns the byte sum. */
function textInto(buf: Buffer, off: number, s: string): number {
  if (s.length === 0) return 0;
  if (utf8Length(s) === s.length) return asciiInto(buf, off, s);
  const n = buf.write(s, off, 'utf8');
  let sum = 0;
  for (let i = off; i < off + n; i++) sum += buf[i]!;
  return sum;
}

/** 'ustar\0' '00' at its offset; returns the byte sum. */
function magicInto(buf: Buffer, at: number): number {
  const m = at + F.magic[0];
  buf[m] = 0x75; buf[m + 1] = 0x73; buf[m + 2] = 0x74; buf[m + 3] = 0x61; buf[m + 4] = 0x72;
  buf[m + 5] = 0; buf[m + 6] = 0x30; buf[m + 7] = 0x30;
  return 0x75 + 0x73 + 0x74 + 0x61 + 0x72 + 0x30 + 0x30;
}

const PRINTABLE = /^[\x20-\x7e]*$/;

/** writeNumber for a value known to fit in octal: zero-padded digits and a NUL; returns the byte sum. */
function octalInto(buf: Buffer, off: number, width: number, value: number): number {
  buf[off + width - 1] = 0;
  let sum = 0;
  if (value <= 0x7fffffff) {
    for (let i = off + width - 2; i >= off; i--) {
      const c = 0x30 + (value & 7);
      buf[i] = c;
      sum += c;
      value >>>= 3;
    }
    return sum;
  }
  for (let i = off + width - 2; i >= off; i--) {
    const c = 0x30 + (value % 8);
    buf[i] = c;
    sum += c;
    value = Math.floor(value / 8);
  }
  return sum;
}

/** sealChecksum, given the sum of the block's bytes with its checksum field still zero. */
function sealInto(buf: Buffer, off: number, byteSum: number): void {
  let sum = 8 * 0x20 + byteSum;
  buf[off + 154] = 0;
  buf[off + 155] = 0x20;
  for (let i = off + 153; i >= off + 148; i--) {
    buf[i] = 0x30 + (sum & 7);
    sum >>>= 3;
  }
}

/** encodePaxRecord for an ASCII key and value, as a string. */
function paxTextRecord(key: string, value: string): string {
  const rest = 1 + key.length + 1 + value.length + 1; // ' ' key '=' value '\n'
  let len = rest + String(rest).length;
  if (String(len).length !== String(rest).length) len = rest + String(len).length;
  return `${len} ${key}=${value}\n`;
}

/**
 * Packs entries into a tar stream, ending with the two-zero-block trailer. Entries are
 * pulled one at a time and bodies chunk by chunk as the reader consumes the stream, so
 * memory stays flat. A body that is not exactly `header.size` bytes fails the stream
 * with `ERR_INVALID_ARCHIVE` (a file that changed size while it was being packed).
 */
export function packEntries(entries: AsyncIterable<TarSourceEntry> | Iterable<TarSourceEntry>): Readable {
  return Readable.from(generateTar(entries), { objectMode: false, highWaterMark: 256 * 1024 });
}

/** Small pieces (headers, padding, small files) are coalesced into chunks of this size. */
const BATCH = 64 * 1024;

/**
 * Yields the archive in ~64 KiB chunks. Sync entry lists and sync bodies (what
 * exportChanges produces) are walked without awaiting, so a layer of many small files
 * costs one promise per 64 KiB rather than several per file.
 */
async function* generateTar(entries: AsyncIterable<TarSourceEntry> | Iterable<TarSourceEntry>): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let bytes = 0;
  const take = (): Buffer => {
    const out = parts.length === 1 ? parts[0]! : Buffer.concat(parts, bytes);
    parts = [];
    bytes = 0;
    return out;
  };
  const add = (buf: Buffer): void => {
    parts.push(buf);
    bytes += buf.length;
  };

  const syncEntries = Symbol.iterator in entries ? (entries as Iterable<TarSourceEntry>) : undefined;
  const source: AsyncIterator<TarSourceEntry> | Iterator<TarSourceEntry> = syncEntries
    ? syncEntries[Symbol.iterator]()
    : (entries as AsyncIterable<TarSourceEntry>)[Symbol.asyncIterator]();
  for (;;) {
    const step = syncEntries ? (source as Iterator<TarSourceEntry>).next() : await source.next();
    if (step.done) break;
    const { header, body } = step.value;
    add(encodeHeader(header));
    if (header.type === 'file') {
      const size = header.size ?? 0;
      let written = 0;
      const chunks = body === undefined ? [] : body instanceof Uint8Array ? [body] : body;
      const sync = Symbol.iterator in chunks ? (chunks as Iterable<Uint8Array>)[Symbol.iterator]() : undefined;
      const async = sync ? undefined : (chunks as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
      let drained = false;
      try {
        for (;;) {
          const next = sync ? sync.next() : await async!.next();
          if (next.done) break;
          const chunk = next.value;
          written += chunk.length;
          if (written > size) {
            sync?.return?.();
            await async?.return?.();
            break;
          }
          const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
          if (buf.length >= BATCH) {
            if (bytes > 0) yield take();
            yield buf;
          } else {
            add(buf);
            if (bytes >= BATCH) yield take();
          }
        }
        drained = true;
      } finally {
        // A consumer that stops early must not leave a body's file descriptor open.
        if (!drained) {
          sync?.return?.();
          await async?.return?.();
        }
      }
      if (written !== size) {
        throw new CairnError('ERR_INVALID_ARCHIVE',
          `Cannot pack ${header.name}: its content is ${written > size ? 'longer' : 'shorter'} than the ${size} bytes in its header (did the file change while it was being packed?).`,
          { subject: header.name });
      }
      const pad = (BLOCK - (size % BLOCK)) % BLOCK;
      if (pad > 0) add(ZEROES.subarray(0, pad));
    }
    if (bytes >= BATCH) yield take();
  }
  add(tarTrailer());
  yield take();
}
