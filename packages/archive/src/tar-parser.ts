// A push-based, synchronous tar parser. Chunks go in with write(); entries, their data
// and their ends come out through a handler, synchronously, as slices of the input (no
// copies). Synchronous on purpose: applyLayer does its file work in the same call stack,
// so a 64 KiB input chunk holding fifty small files costs no promise hand-offs at all.
// readTar() (read-tar.ts) wraps it in an async iterator for everyone else.
//
// Dialects: v7, ustar (prefix), GNU (long name 'L' / long link 'K', base-256 numbers,
// old sparse 'S' with extension blocks, dumpdir 'D'), PAX ('x' per entry, 'g' global;
// path, linkpath, size, uid, gid, uname, gname, mtime, atime, SCHILY.xattr.*,
// LIBARCHIVE.xattr.*, SCHILY.devmajor/devminor, GNU.sparse 0.0 / 0.1 / 1.0).
import { CairnError } from '@cairnfs/core';
import type { SparseMap, SparseSegment, TarEntry, TarEntryType } from './entry.js';
import { scanPax } from './pax.js';
import { BLOCK, F, checksum, decimal, isZeroBlock, parsePaxTime, readNumber, readString, signedChecksum } from './tar-fields.js';
import { SPARSE_KEYS, TAR_LIMITS, globalKeyMatters } from './tar-limits.js';

export { TAR_LIMITS } from './tar-limits.js';

/** Receives the parse, synchronously. Throwing from a callback aborts the parse. */
export interface TarHandler {
  /** An entry begins; `offset` is the byte offset of its (first) header in the archive. */
  entry(entry: TarEntry, offset: number): void;
  /** File content. `position` is where the bytes belong in the file (holes skipped for sparse files). */
  data(chunk: Buffer, position: number): void;
  /** The entry's content is complete. Called for every entry, data or not. */
  end(): void;
}


const enum State {
  Header,
  Meta,
  SparseExt,
  SparseMap,
  Data,
  Skip,
  Done,
}

type MetaKind = 'x' | 'g' | 'L' | 'K';

const HEADER_ONLY = new Set(['1', '2', '3', '4', '5', '6']);

export class TarParser {
  private state = State.Header;
  /** Absolute archive offset of the next byte to be consumed. */
  private offset = 0;
  private headerOffset = 0;
  private readonly block = Buffer.alloc(BLOCK);
  private blockFill = 0;
  private sawZeroBlock = false;

  // Metadata gathered from headers that precede the entry they describe.
  private longName: string | undefined;
  private longLink: string | undefined;
  /**
   * The pending entry's PAX records, in archive order, values already decoded: SCHILY
   * xattr values as copied bytes, everything else as text (so nothing refers to an input
   * chunk the producer may reuse once write() returns). Two parallel arrays, reused.
   */
  private readonly localKeys: string[] = [];
  private readonly localValues: PaxValue[] = [];
  private hasLocalPax = false;
  /** Bytes of the 'x' bodies since the last entry (TAR_LIMITS.localPax). */
  private localPaxBytes = 0;
  private readonly globalPax = new Map<string, PaxValue>();
  /** Raw bytes (key + value) of each global record kept, and their sum (TAR_LIMITS.globalPax). */
  private readonly globalSizes = new Map<string, number>();
  private globalPaxBytes = 0;

  private meta: Buffer | undefined;
  private metaSize = 0;
  private metaFill = 0;
  private metaKind: MetaKind = 'x';

  /** The entry being read (for messages) and its data layout. */
  private entry: TarEntry | undefined;
  private entryName = '';
  private remaining = 0;
  private padAfter = 0;
  private position = 0;
  private segments: SparseSegment[] | undefined;
  private segIndex = 0;
  private segLeft = 0;
  private skipLeft = 0;
  /** While reading an old-GNU sparse extension or a 1.0 sparse map: what to emit afterwards. */
  private pendingSparse: { entry: TarEntry; segments: SparseSegment[]; stored: number } | undefined;
  private mapBytes = 0;
  /**
   * The GNU sparse 1.0 map, parsed as its blocks arrive: the line being read (its value
   * and digit count), the entry count (-1 until read), an offset waiting for its length.
   */
  private mapValue = 0;
  private mapDigits = 0;
  private mapCount = -1;
  private mapOffset: number | undefined;
  /** Logical bytes of the sparse files so far (TAR_LIMITS.sparseTotal). */
  private sparseTotal = 0;

  constructor(private readonly handler: TarHandler) {}

  /** True once the end-of-archive marker was read; later input is ignored. */
  get finished(): boolean {
    return this.state === State.Done;
  }

  write(chunk: Buffer): void {
    let pos = 0;
    const len = chunk.length;
    while (pos < len) {
      switch (this.state) {
        case State.Header:
        case State.SparseExt:
        case State.SparseMap: {
          let block: Buffer;
          if (this.blockFill === 0 && len - pos >= BLOCK) {
            block = chunk.subarray(pos, pos + BLOCK);
            pos += BLOCK;
          } else {
            const n = Math.min(BLOCK - this.blockFill, len - pos);
            chunk.copy(this.block, this.blockFill, pos, pos + n);
            this.blockFill += n;
            pos += n;
            if (this.blockFill < BLOCK) return;
            this.blockFill = 0;
            block = this.block;
          }
          const at = this.offset;
          this.offset += BLOCK;
          if (this.state === State.Header) this.onHeader(block, at);
          else if (this.state === State.SparseExt) this.onSparseExt(block);
          else this.onSparseMapBlock(block);
          break;
        }
        case State.Meta: {
          if (this.metaFill === 0 && len - pos >= this.metaSize) {
            // The whole body is in this chunk: parse it in place, no copy.
            const body = chunk.subarray(pos, pos + this.metaSize);
            pos += this.metaSize;
            this.offset += this.metaSize;
            this.onMeta(body);
            break;
          }
          // Fully overwritten by the copies below, so no need to zero it.
          const meta = (this.meta ??= Buffer.allocUnsafe(this.metaSize));
          const n = Math.min(meta.length - this.metaFill, len - pos);
          chunk.copy(meta, this.metaFill, pos, pos + n);
          this.metaFill += n;
          pos += n;
          this.offset += n;
          if (this.metaFill === meta.length) {
            this.meta = undefined;
            this.metaFill = 0;
            this.onMeta(meta);
          }
          break;
        }
        case State.Data: {
          const n = Math.min(this.remaining, len - pos);
          this.emit(chunk.subarray(pos, pos + n));
          pos += n;
          this.offset += n;
          this.remaining -= n;
          if (this.remaining === 0) this.finishEntry();
          break;
        }
        case State.Skip: {
          const n = Math.min(this.skipLeft, len - pos);
          pos += n;
          this.offset += n;
          this.skipLeft -= n;
          if (this.skipLeft === 0) this.state = State.Header;
          break;
        }
        case State.Done:
          return;
      }
    }
  }

  /** The input ended. Throws ERR_INVALID_ARCHIVE when it ended inside an entry. */
  finish(): void {
    if (this.state === State.Done) return;
    const clean = this.state === State.Header && this.blockFill === 0 &&
      this.longName === undefined && this.longLink === undefined && !this.hasLocalPax;
    if (clean) {
      this.state = State.Done;
      return;
    }
    const where = this.entry || this.state !== State.Header ? ` inside entry "${this.entryName}"` : '';
    throw this.invalid(`the archive is truncated: input ended${where} at byte ${this.offset + this.blockFill}`);
  }

  private invalid(what: string): CairnError {
    return new CairnError('ERR_INVALID_ARCHIVE',
      `Invalid layer archive: ${what}. The tar is corrupt or incomplete; fetch or export it again.`,
      { subject: this.entryName || `offset ${this.headerOffset}` });
  }

  private onHeader(block: Buffer, at: number): void {
    this.headerOffset = at;
    if (isZeroBlock(block)) {
      if (this.sawZeroBlock) {
        this.state = State.Done;
        if (this.longName !== undefined || this.hasLocalPax || this.longLink !== undefined) {
          throw this.invalid(`end of archive at byte ${at} right after an extended header`);
        }
      }
      this.sawZeroBlock = true;
      return;
    }
    if (this.sawZeroBlock) {
      throw this.invalid(`a zero block at byte ${at - BLOCK} is followed by more entries`);
    }
    const stored = readNumber(block, F.chksum[0], F.chksum[1]);
    this.entryName = readString(block, F.name[0], F.name[1]);
    if (stored === null || (stored !== checksum(block) && stored !== signedChecksum(block))) {
      throw this.invalid(`header checksum mismatch at byte ${at}`);
    }
    const flag = block[F.typeflag[0]] === 0 ? '0' : String.fromCharCode(block[F.typeflag[0]]!);
    const size = this.num(block, 'size');
    if (size < 0) throw this.invalid(`negative size in the header at byte ${at}`);

    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      if (size > TAR_LIMITS.extendedHeader) throw this.invalid(`a ${size}-byte extended header at byte ${at} (limit ${TAR_LIMITS.extendedHeader})`);
      if (flag === 'x') {
        this.localPaxBytes += size;
        if (this.localPaxBytes > TAR_LIMITS.localPax) {
          throw this.invalid(`the PAX headers before the entry at byte ${at} hold more than ${TAR_LIMITS.localPax} bytes (limit)`);
        }
      }
      this.metaKind = flag;
      this.meta = undefined;
      this.metaSize = size;
      this.metaFill = 0;
      this.padAfter = padding(size);
      this.state = State.Meta;
      if (size === 0) this.onMeta(EMPTY);
      return;
    }
    this.buildEntry(block, flag, size);
  }

  private num(block: Buffer, field: keyof typeof F): number {
    const [off, width] = F[field];
    const value = readNumber(block, off, width);
    if (value === null) throw this.invalid(`malformed ${field} field in the header at byte ${this.headerOffset}`);
    return value;
  }

  private onMeta(body: Buffer): void {
    switch (this.metaKind) {
      case 'L':
        this.longName = cString(body);
        break;
      case 'K':
        this.longLink = cString(body);
        break;
      case 'x':
      case 'g': {
        const global = this.metaKind === 'g';
        const ok = scanPax(body, (k, start, end, keyBytes) => {
          // GNU tar writes ctime on every entry; nothing applies it, so it is not decoded.
          if (k === 'ctime') return;
          if (global && !globalKeyMatters(k)) return;
          const v = paxValue(body, k, start, end);
          if (!global) {
            this.localKeys.push(k);
            this.localValues.push(v);
            return;
          }
          this.globalPaxBytes -= this.globalSizes.get(k) ?? 0;
          if (v.length === 0) {
            this.globalPax.delete(k);
            this.globalSizes.delete(k);
          } else {
            this.globalPax.set(k, v);
            this.globalSizes.set(k, keyBytes + end - start);
            this.globalPaxBytes += keyBytes + end - start;
          }
        });
        if (!ok) throw this.invalid(`malformed PAX header at byte ${this.headerOffset}`);
        if (!global) this.hasLocalPax = true;
        if (global && this.globalPaxBytes > TAR_LIMITS.globalPax) {
          throw this.invalid(`the global PAX records in force after the header at byte ${this.headerOffset} hold ${this.globalPaxBytes} bytes (limit ${TAR_LIMITS.globalPax})`);
        }
        break;
      }
    }
    this.skipLeft = this.padAfter;
    this.state = this.skipLeft > 0 ? State.Skip : State.Header;
  }

  private buildEntry(block: Buffer, flag: string, headerSize: number): void {
    const magicUstar = block[257] === 0x75 && block[258] === 0x73 && block[259] === 0x74 &&
      block[260] === 0x61 && block[261] === 0x72;
    const gnu = magicUstar && block[262] === 0x20;
    const posix = magicUstar && block[262] === 0;

    let name = this.entryName; // onHeader read the name field already
    if (posix && block[F.prefix[0]] !== 0) name = readString(block, F.prefix[0], F.prefix[1]) + '/' + name;
    let linkname = readString(block, F.linkname[0], F.linkname[1]);
    let uid = this.num(block, 'uid');
    let gid = this.num(block, 'gid');
    let size = headerSize;
    // The header's whole-second mtime becomes a bigint only when no PAX mtime replaces it.
    const headerMtime = this.num(block, 'mtime');
    let mtimeNs: bigint | undefined;
    let atimeNs: bigint | undefined;
    let uname = magicUstar ? readString(block, F.uname[0], F.uname[1]) : '';
    let gname = magicUstar ? readString(block, F.gname[0], F.gname[1]) : '';
    let devmajor = magicUstar ? this.num(block, 'devmajor') : 0;
    let devminor = magicUstar ? this.num(block, 'devminor') : 0;
    if (gnu && block[F.gnuAtime[0]] !== 0) {
      const at = readNumber(block, F.gnuAtime[0], F.gnuAtime[1]);
      if (at !== null && at !== 0) atimeNs = BigInt(at) * 1_000_000_000n;
    }
    const xattrs = new Map<string, Buffer>();
    let sparseAttrs: PaxSparse | undefined;

    if (this.globalPax.size > 0 || this.hasLocalPax) {
      // Globals first, then this entry's records in archive order; each record decides its
      // field outright (an empty value restores the header's), so the last one for a key wins.
      const header = { name, linkname, size, uid, gid, uname, gname, devmajor, devminor, atimeNs };
      let offsets: number[] | undefined;
      const apply = (k: string, v: PaxValue, local: boolean): void => {
        if (typeof v !== 'string') {
          xattrs.set(k.slice(13), v); // SCHILY.xattr.* (kept as bytes)
          return;
        }
        if (local && (k === 'GNU.sparse.offset' || k === 'GNU.sparse.numbytes')) {
          (offsets ??= []).push(this.paxInt(k, v));
          return;
        }
        if (k.startsWith('LIBARCHIVE.xattr.')) {
          xattrs.set(decodeURIComponentSafe(k.slice(17)), Buffer.from(v, 'base64'));
          return;
        }
        const empty = v.length === 0; // an empty value cancels the global/header value
        switch (k) {
          case 'path': name = empty ? header.name : v; break;
          case 'linkpath': linkname = empty ? header.linkname : v; break;
          case 'size': size = empty ? header.size : this.paxInt(k, v); break;
          case 'uid': uid = empty ? header.uid : this.paxInt(k, v); break;
          case 'gid': gid = empty ? header.gid : this.paxInt(k, v); break;
          case 'uname': uname = empty ? header.uname : v; break;
          case 'gname': gname = empty ? header.gname : v; break;
          case 'SCHILY.devmajor': devmajor = empty ? header.devmajor : this.paxInt(k, v); break;
          case 'SCHILY.devminor': devminor = empty ? header.devminor : this.paxInt(k, v); break;
          case 'mtime': mtimeNs = empty ? undefined : this.paxTime(k, v); break;
          case 'atime': atimeNs = empty ? header.atimeNs : this.paxTime(k, v); break;
          default:
            if (k.startsWith('GNU.sparse.') && SPARSE_KEYS.has(k.slice(11))) {
              if (empty) {
                if (sparseAttrs) delete sparseAttrs[k.slice(11)];
              } else {
                (sparseAttrs ??= {})[k.slice(11)] = v;
              }
            }
        }
      };
      for (const [k, v] of this.globalPax) apply(k, v, false);
      const keys = this.localKeys;
      const values = this.localValues;
      for (let i = 0; i < keys.length; i++) apply(keys[i]!, values[i]!, true);
      if (offsets !== undefined) (sparseAttrs ??= {}).pairs = offsets;
    }
    if (this.longName !== undefined) name = this.longName;
    if (this.longLink !== undefined) linkname = this.longLink;
    if (sparseAttrs?.name !== undefined) name = sparseAttrs.name;
    this.longName = undefined;
    this.longLink = undefined;
    this.localKeys.length = 0;
    this.localValues.length = 0;
    this.hasLocalPax = false;
    this.localPaxBytes = 0;
    this.entryName = name;
    mtimeNs ??= BigInt(headerMtime) * 1_000_000_000n;

    let type: TarEntryType | undefined;
    switch (flag) {
      case '0': case '7': case 'S': type = name.endsWith('/') && flag === '0' && !magicUstar ? 'dir' : 'file'; break;
      case '1': type = 'hardlink'; break;
      case '2': type = 'symlink'; break;
      case '3': type = 'char'; break;
      case '4': type = 'block'; break;
      case '5': case 'D': type = 'dir'; break;
      case '6': type = 'fifo'; break;
    }
    // Header-only types carry no data whatever their size field says (as Go's archive/tar,
    // which moby uses, reads them). GNU dumpdirs and unknown types have data we skip.
    const stored = HEADER_ONLY.has(flag) ? 0 : size;
    if (type === undefined) {
      // Unknown or unsupported types (volume labels, multi-volume continuations, …) are
      // skipped whole, never written.
      this.skip(stored);
      return;
    }
    const entry: TarEntry = {
      name, type, mode: this.num(block, 'mode') & 0o7777, uid, gid, uname, gname,
      size: type === 'file' ? size : 0, mtimeNs, devmajor, devminor, xattrs,
    };
    if (atimeNs !== undefined) entry.atimeNs = atimeNs;
    if (type === 'symlink' || type === 'hardlink') entry.linkname = linkname;
    this.entry = entry;

    if (type === 'file' && flag === 'S') {
      this.oldGnuSparse(block, entry, stored);
      return;
    }
    if (type === 'file' && sparseAttrs !== undefined && this.paxSparse(entry, sparseAttrs, stored)) return;
    this.handler.entry(entry, this.headerOffset);
    if (type === 'file') {
      this.startData(stored, undefined);
    } else {
      this.handler.end();
      this.entry = undefined;
      this.skip(stored);
    }
  }

  private paxInt(key: string, text: string): number {
    let value = 0;
    for (let i = 0; i < text.length; i++) {
      const d = text.charCodeAt(i) - 0x30;
      if (d < 0 || d > 9) { value = NaN; break; }
      value = value * 10 + d;
    }
    if (text.length === 0 || !Number.isSafeInteger(value)) {
      throw this.invalid(`PAX record ${key}="${text.slice(0, 40)}" is not a number`);
    }
    return value;
  }

  private paxTime(key: string, text: string): bigint {
    const ns = parsePaxTime(text);
    if (ns === null) throw this.invalid(`PAX record ${key} is not a time`);
    return ns;
  }

  private skip(bytes: number): void {
    this.skipLeft = bytes + padding(bytes);
    this.state = this.skipLeft > 0 ? State.Skip : State.Header;
  }

  private startData(stored: number, segments: SparseSegment[] | undefined): void {
    this.remaining = stored;
    this.padAfter = padding(stored + this.mapBytes);
    this.mapBytes = 0;
    this.position = 0;
    this.segments = segments;
    this.segIndex = 0;
    this.segLeft = 0;
    if (segments) this.nextSegment();
    if (stored === 0) this.finishEntry();
    else this.state = State.Data;
  }

  private nextSegment(): void {
    const segs = this.segments!;
    while (this.segIndex < segs.length && segs[this.segIndex]!.length === 0) this.segIndex++;
    if (this.segIndex < segs.length) {
      this.position = segs[this.segIndex]!.offset;
      this.segLeft = segs[this.segIndex]!.length;
      this.segIndex++;
    }
  }

  private emit(bytes: Buffer): void {
    if (!this.segments) {
      this.handler.data(bytes, this.position);
      this.position += bytes.length;
      return;
    }
    let pos = 0;
    while (pos < bytes.length) {
      const n = Math.min(this.segLeft, bytes.length - pos);
      this.handler.data(bytes.subarray(pos, pos + n), this.position);
      this.position += n;
      this.segLeft -= n;
      pos += n;
      if (this.segLeft === 0) this.nextSegment();
    }
  }

  private finishEntry(): void {
    this.handler.end();
    this.entry = undefined;
    this.skipLeft = this.padAfter;
    this.state = this.skipLeft > 0 ? State.Skip : State.Header;
  }

  // --- GNU sparse files -------------------------------------------------------------

  private oldGnuSparse(block: Buffer, entry: TarEntry, stored: number): void {
    const segments: SparseSegment[] = [];
    this.readSparsePairs(block, F.gnuSparse[0], 4, segments);
    const realSize = readNumber(block, F.gnuRealSize[0], F.gnuRealSize[1]);
    if (realSize === null) throw this.invalid('malformed GNU sparse real size');
    entry.size = realSize;
    this.pendingSparse = { entry, segments, stored };
    if (block[F.gnuIsExtended[0]]) {
      this.state = State.SparseExt;
    } else {
      this.emitSparseEntry();
    }
  }

  private onSparseExt(block: Buffer): void {
    this.readSparsePairs(block, 0, 21, this.pendingSparse!.segments);
    if (!block[504]) this.emitSparseEntry();
  }

  private readSparsePairs(block: Buffer, off: number, count: number, out: SparseSegment[]): void {
    for (let i = 0; i < count; i++) {
      const at = off + i * 24;
      if (block[at] === 0) break;
      const offset = readNumber(block, at, 12);
      const length = readNumber(block, at + 12, 12);
      if (offset === null || length === null) throw this.invalid('malformed GNU sparse map');
      out.push({ offset, length });
    }
    this.checkSegmentCount(out.length);
  }

  private checkSegmentCount(n: number): void {
    if (n > TAR_LIMITS.sparseSegments) throw this.invalid(`a GNU sparse map of more than ${TAR_LIMITS.sparseSegments} entries (limit)`);
  }

  /** PAX sparse formats; returns true when the entry is sparse (and is now being handled). */
  private paxSparse(entry: TarEntry, attrs: PaxSparse, stored: number): boolean {
    const realText = attrs.realsize ?? attrs.size;
    const realSize = realText === undefined ? NaN : decimal(realText);
    if (attrs.major === '1' && attrs.minor === '0') {
      if (!Number.isSafeInteger(realSize)) throw this.invalid('GNU sparse 1.0 entry without a real size');
      entry.size = realSize;
      this.pendingSparse = { entry, segments: [], stored };
      this.mapBytes = 0;
      this.mapValue = 0;
      this.mapDigits = 0;
      this.mapCount = -1;
      this.mapOffset = undefined;
      this.state = stored > 0 ? State.SparseMap : State.Header;
      if (stored === 0) throw this.invalid('GNU sparse 1.0 entry without its map');
      return true;
    }
    let numbers: number[] | undefined;
    // An empty number between commas reads as 0 (as the addon's reader).
    if (attrs.map !== undefined) numbers = attrs.map === '' ? [] : attrs.map.split(',').map((n) => (n === '' ? 0 : decimal(n)));
    else if (attrs.pairs !== undefined) numbers = attrs.pairs;
    if (numbers === undefined) return false;
    if (!Number.isSafeInteger(realSize) || numbers.length % 2 !== 0 || !numbers.every(Number.isSafeInteger)) {
      throw this.invalid('malformed GNU sparse map in a PAX header');
    }
    this.checkSegmentCount(numbers.length / 2);
    const segments: SparseSegment[] = [];
    for (let i = 0; i < numbers.length; i += 2) segments.push({ offset: numbers[i]!, length: numbers[i + 1]! });
    entry.size = realSize;
    this.pendingSparse = { entry, segments, stored };
    this.emitSparseEntry();
    return true;
  }

  /**
   * The map is "<count>\n" then "<offset>\n<length>\n" per entry, in as many blocks as it
   * needs: each block is parsed as it arrives (one pass, only the line being read kept),
   * and the rest of the block after the last line is padding.
   */
  private onSparseMapBlock(block: Buffer): void {
    const pending = this.pendingSparse!;
    this.mapBytes += BLOCK;
    if (this.mapBytes > pending.stored) throw this.invalid('GNU sparse 1.0 map is too long');
    for (let i = 0; i < BLOCK; i++) {
      const c = block[i]!;
      if (c !== 0x0a) {
        if (c < 0x30 || c > 0x39) throw this.invalid('malformed GNU sparse 1.0 map');
        this.mapValue = this.mapValue * 10 + (c - 0x30);
        this.mapDigits++;
        if (this.mapValue > Number.MAX_SAFE_INTEGER) throw this.invalid('malformed GNU sparse 1.0 map');
        continue;
      }
      if (this.mapDigits === 0) throw this.invalid('malformed GNU sparse 1.0 map');
      const v = this.mapValue;
      this.mapValue = 0;
      this.mapDigits = 0;
      if (this.mapCount < 0) {
        if (v > TAR_LIMITS.sparseSegments) throw this.invalid(`a GNU sparse 1.0 map of ${v} entries (limit ${TAR_LIMITS.sparseSegments})`);
        this.mapCount = v;
      } else if (this.mapOffset === undefined) {
        this.mapOffset = v;
      } else {
        pending.segments.push({ offset: this.mapOffset, length: v });
        this.mapOffset = undefined;
      }
      if (this.mapOffset === undefined && pending.segments.length === this.mapCount) {
        pending.stored -= this.mapBytes;
        this.emitSparseEntry();
        return;
      }
    }
  }

  private emitSparseEntry(): void {
    const { entry, segments, stored } = this.pendingSparse!;
    this.pendingSparse = undefined;
    let end = 0;
    let total = 0;
    for (const s of segments) {
      if (s.offset < end || s.length < 0) throw this.invalid('GNU sparse map segments overlap or go backwards');
      end = s.offset + s.length;
      total += s.length;
    }
    if (end > entry.size || total !== stored) {
      throw this.invalid(`GNU sparse map does not match the entry (map holds ${total} bytes, entry ${stored})`);
    }
    this.sparseTotal += entry.size;
    if (this.sparseTotal > TAR_LIMITS.sparseTotal) {
      throw this.invalid(`the sparse files up to this one add up to ${this.sparseTotal} bytes (limit ${TAR_LIMITS.sparseTotal} for one archive)`);
    }
    const sparse: SparseMap = { realSize: entry.size, segments };
    entry.sparse = sparse;
    this.handler.entry(entry, this.headerOffset);
    this.startData(stored, segments);
  }
}

interface PaxSparse {
  major?: string;
  minor?: string;
  name?: string;
  realsize?: string;
  size?: string;
  map?: string;
  pairs?: number[];
  [k: string]: string | number[] | undefined;
}

/**
 * A PAX value as the parser keeps it: SCHILY.xattr values as bytes (xattr values are
 * binary: a security.capability blob is not UTF-8), everything else as text.
 */
type PaxValue = string | Buffer;

const EMPTY = Buffer.alloc(0);

/** Decodes (and, for bytes, copies) one record's value out of a PAX body. */
function paxValue(body: Buffer, key: string, start: number, end: number): PaxValue {
  if (key.startsWith('SCHILY.xattr.')) return Buffer.from(body.subarray(start, end));
  // LIBARCHIVE.xattr values are base64: latin1 keeps any stray byte as one character.
  return body.toString(key.startsWith('LIBARCHIVE.') ? 'latin1' : 'utf8', start, end);
}


function padding(size: number): number {
  const r = size % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}

function cString(body: Buffer): string {
  const nul = body.indexOf(0);
  return body.toString('utf8', 0, nul < 0 ? body.length : nul);
}

function decodeURIComponentSafe(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
