// Layer apply in the addon (native/untar.cc and the reader, beneath and applier it drives).
import { native, type IdRanges } from './native.js';

/** How {@link LayerApplier} writes whiteouts: archive's ApplyOptions.whiteouts. */
export type ApplierWhiteouts = 'delete' | 'overlay' | 'aufs';

export interface LayerApplierOptions {
  whiteouts: ApplierWhiteouts;
  /** Refuse character and block devices (ERR_UNSAFE_ARCHIVE). */
  noDevices: boolean;
  /** Apply entries' uid/gid. */
  ownership: boolean;
  /** The effective ids and umask of the process (a new file already has these; chown/chmod only when the entry differs). */
  euid: number;
  egid: number;
  umask: number;
  /**
   * Tests only: act as on a kernel without fchmodat2 (Linux 6.6) and the *xattrat calls
   * (6.13), so the fallbacks run (modes given at mknod time by a helper thread with a
   * private umask; xattrs set by name on a helper thread whose cwd is the parent fd).
   */
  legacyKernel?: boolean;
  /** Store owners shifted container → host by these maps; an owner they do not cover fails with EOVERFLOW. */
  idMappings?: IdRanges | null;
  /** A refused chown (EPERM/EINVAL) or an owner outside idMappings leaves the caller's owner instead of failing; counted in `dropped`. */
  ignoreChownErrors?: boolean;
  /** Overlay whiteouts: the opaque-directory xattr (default `trusted.overlay.opaque`; `user.overlay.opaque` for userxattr mounts). */
  opaqueXattr?: string;
}

/** What an apply left undone because the process could not do it (a user namespace). */
export interface ApplierDropped {
  /** chowns dropped under ignoreChownErrors, and the first as "path uid:gid". */
  chowns: number;
  firstChown: string;
  /** Device nodes mknod refused (EPERM): recorded as placeholder files, see RECORDED_DEVICE_XATTR. */
  devices: number;
  firstDevice: string;
}

/**
 * Where mknod is refused (a user namespace has no CAP_MKNOD over the host), a device entry
 * is stored as an empty mode-0000 file carrying this xattr, valued
 * `uid:gid:<octal mode>:char-<major>-<minor>` (or `block-…`), as containers/storage and
 * fuse-overlayfs record what unprivileged storage cannot be. The packer turns it back into
 * the device, so diff and export still carry it.
 */
export const RECORDED_DEVICE_XATTR = 'user.containers.override_stat';

/**
 * Layer apply in the addon: raw tar bytes in, files out, with the tar parse and every
 * rule of archive's applyLayer (path safety, whiteouts, ownership, modes, xattrs, times)
 * done natively, so an entry costs no JS work at all. Parent directories are opened
 * beneath the root with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) and every operation
 * is relative to them, final components never followed: a new node's owner, mode, xattrs
 * and times are set on an O_PATH fd of it, checked to be the kind of node just made (a
 * name swapped meanwhile is ERR_UNSAFE_ARCHIVE, and nothing is done to the swapped-in node).
 *
 * Feed chunks in order with `write` (on this thread) or `writeAsync` (on the libuv pool;
 * await each before the next call, and do not change the chunks until it settles), then
 * `finish()` once the input ended: it refuses a truncated archive, sets directory times
 * and returns the content bytes written. Archive faults are errors with `cairnCode`
 * (ERR_INVALID_ARCHIVE / ERR_UNSAFE_ARCHIVE), `message` and `subject`; failed syscalls are
 * Node-style errors (`code`, `syscall`, `path`) with the archive `entry` they hit. After
 * a failure, `abort()` removes the half-written file; `close()` releases every fd.
 */
export interface LayerApplier {
  write(chunks: Uint8Array | Uint8Array[]): void;
  writeAsync(chunks: Uint8Array | Uint8Array[]): Promise<void>;
  /** The whole input read from `fd` (pread from offset 0 into one reused buffer), on this thread. */
  writeFrom(fd: number): void;
  /** The same on the libuv pool; `fd` must stay open until it settles. */
  writeFromAsync(fd: number): Promise<void>;
  /** `length` bytes of `fd` from `offset` (pread; EOF ends it early), on this thread; tapped, to the end of the range. */
  writeRange(fd: number, offset: number, length: number): void;
  /** The same on the libuv pool; `fd` must stay open until it settles. */
  writeRangeAsync(fd: number, offset: number, length: number): Promise<void>;
  /**
   * The import pass (call before the first write): every input byte from now on is hashed
   * (SHA-256) and the layer's tar-split record is made, in the format of image's
   * SplitRecorder, on the thread that applies. An entry that takes the layer's files past
   * `maxLogicalBytes` (logical sizes) is refused with ERR_INVALID_ARCHIVE before it is
   * written; `what` names the layer in that message. Returns true when the records come
   * as one gzip stream (compressed on the pool thread through Node's zlib), false when
   * they come raw (`rawRecords`, or no zlib found).
   */
  tap(maxLogicalBytes: number, what: string, portableHash?: boolean, rawRecords?: boolean): boolean;
  /**
   * From now on the input (written, or read from an fd) is a compressed blob
   * (kind: {@link APPLIER_COMPRESSION}), decoded in the applier's own pass: what the hash,
   * the record and the tar reader see is its output. Output past `maxOutputBytes` is
   * ERR_INVALID_ARCHIVE (a decompression bomb, `what` names the blob); corrupt or truncated
   * input is ERR_INVALID_ARCHIVE too, the truncation found by finish(). Call before the
   * first write. Returns null, or why it cannot (a library missing: see {@link applierDecodes}).
   */
  decompress(kind: number, maxOutputBytes: number, what: string): string | null;
  /** The tar-split records made since the last call: the next piece of the gzip stream, or raw records. */
  takeRecord(): Buffer;
  /** After finish(): the sha256 (hex) of every byte written, whether the layer's files rebuild it, the bytes and the last records. */
  tapEnd(): ApplierTapResult;
  finish(): number;
  /** The same on the libuv pool (a directory's times cost a syscall each); nothing else may be called until it settles. */
  finishAsync(): Promise<number>;
  abort(): void;
  close(): void;
  /** True once the end-of-archive marker was read; later input is ignored. */
  readonly finished: boolean;
  /** The entry being applied (for messages). */
  readonly currentName: string;
  readonly bytes: number;
  /** What was left undone (read it before close()). */
  readonly dropped: ApplierDropped;
}

/** What a tapped apply saw (see {@link LayerApplier.tap}). */
export interface ApplierTapResult {
  digest: string;
  exact: boolean;
  bytes: number;
  record: Buffer;
}

/**
 * SHA-256 of `chunks` by the applier's own code (hex): through Node's libcrypto when its
 * symbols are there ({@link sha256UsesLibcrypto}), else, or with `portable`, the addon's
 * built-in implementation. For tests.
 */
export function applierSha256(chunks: Uint8Array | Uint8Array[], portable = false): string {
  return native.sha256Hex(chunks, portable);
}

/** True when the applier hashes through Node's libcrypto (false with CAIRN_SHA256_PORTABLE=1). */
export const sha256UsesLibcrypto = (): boolean => native.sha256Libcrypto();

/** The kinds {@link LayerApplier.decompress} takes. */
export const APPLIER_COMPRESSION = { gzip: 1, zstd: 2 } as const;

/**
 * Whether the applier can decode blobs of this compression in its own pass: gzip through
 * Node's zlib, zstd through the libzstd `zstdLibrary()` finds. False with
 * CAIRN_DECODE_IN_JS=1 (tests: the stream path), and for zstd with CAIRN_ZSTD_JS=1.
 */
export function applierDecodes(kind: keyof typeof APPLIER_COMPRESSION): boolean {
  if (process.env.CAIRN_DECODE_IN_JS === '1' || (kind === 'zstd' && process.env.CAIRN_ZSTD_JS === '1')) return false;
  // Asked once per kind: the addon answers by making a decoder, and what the process has
  // loaded (Node's zlib, a libzstd) does not change.
  let ok = decodable.get(kind);
  if (ok === undefined) {
    ok = native.decoderMissing(APPLIER_COMPRESSION[kind]) === null;
    decodable.set(kind, ok);
  }
  return ok;
}

const decodable = new Map<keyof typeof APPLIER_COMPRESSION, boolean>();

const WHITEOUT_MODES: Record<ApplierWhiteouts, number> = { delete: 0, overlay: 1, aufs: 2 };

/** Opens a {@link LayerApplier} on the directory `root` (which must not be a symlink). */
export function openLayerApplier(root: string, opts: LayerApplierOptions): LayerApplier {
  return new native.LayerApplier(root, WHITEOUT_MODES[opts.whiteouts], opts.noDevices, opts.ownership, opts.euid, opts.egid, opts.umask,
    opts.legacyKernel ?? false, opts.idMappings ?? null, opts.ignoreChownErrors ?? false, opts.opaqueXattr);
}

/**
 * The caps of the applier's tar reader (native/tar_reader.h), each refused with
 * ERR_INVALID_ARCHIVE: bytes of one 'x'/'g'/'L'/'K' body; of the 'x' bodies before one
 * entry together; of the global PAX records in force; entries of one sparse map; logical
 * bytes of all sparse files of one archive. @cairnfs/archive's TAR_LIMITS has the same numbers.
 */
export interface TarLimits {
  readonly extendedHeader: number;
  readonly localPax: number;
  readonly globalPax: number;
  readonly sparseSegments: number;
  readonly sparseTotal: number;
}

/** The applier's tar reader caps. */
export const tarLimits: TarLimits = native.tarLimits;
