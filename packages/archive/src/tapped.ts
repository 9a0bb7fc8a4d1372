// A layer tar with the import pass attached: whoever applies it also hashes it (the diff
// id) and records its tar-split. applyLayer's native path claims it and does both on the
// pool thread, in the applier's own pass over the bytes (and, for a byte range of a file,
// reads the range itself); any other consumer (the pure-JS apply, a driver that does not
// apply through applyLayer) iterates `fallback`, which the importer built to hash and
// record in JS. Either way the importer ends with the same digest, record and `exact`.
import type { Buffer } from 'node:buffer';

/** A byte range of an open file: what a layer blob in an image archive or layout is. */
export interface TarFileRange {
  fd: number;
  start: number;
  length: number;
}

/**
 * The source is a compressed blob, which the native applier decodes in its pass (offered
 * only where `applierDecodes` of @cairnfs/sys says it can), to at most `maxBytes` bytes.
 */
export interface TarCompressed {
  kind: 'gzip' | 'zstd';
  maxBytes: number;
}

export interface TarTap {
  /** Most bytes the layer's files may hold by their logical sizes; past it ERR_INVALID_ARCHIVE, before the entry is written. */
  maxLogicalBytes: number;
  /** Names the layer in messages ("layer sha256:…"). */
  what: string;
  /**
   * The tar-split records (image's SplitRecorder format), in order, as they are made:
   * with `gzipped`, the consecutive pieces of one gzip stream of them (the split file
   * itself); else the records raw, for the importer to compress.
   */
  onRecord(records: Buffer, gzipped: boolean): void;
  /** Tests: have the records handed out raw even where the addon could gzip them. */
  rawRecords?: boolean;
  /** Input bytes read from a file range (progress). */
  onBytes?(n: number): void;
}

/** What the native pass saw: `digest` is `sha256:<hex>` of every byte up to the end of the input. */
export interface TapResult {
  digest: string;
  exact: boolean;
  bytes: number;
}

export class TappedTar implements AsyncIterable<Uint8Array> {
  private taken: 'native' | 'js' | undefined;
  /** Set by the native pass once the input ended and the applier finished. */
  result: TapResult | undefined;

  /**
   * `source` is what the native pass reads (compressed when `compressed` says so);
   * `fallback` the same layer as uncompressed tar bytes, for any other consumer.
   */
  constructor(readonly source: TarFileRange | AsyncIterable<Uint8Array>, readonly tap: TarTap,
    private readonly fallback: AsyncIterable<Uint8Array>, readonly compressed?: TarCompressed) {}

  /** For the native applier: true (and the tar is its) unless someone iterated it already. */
  claim(): boolean {
    if (this.taken !== undefined) return false;
    this.taken = 'native';
    return true;
  }

  /** True when the native pass took it: then `result` and the records are its. */
  get claimed(): boolean {
    return this.taken === 'native';
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    if (this.taken === 'native') throw new Error('TappedTar: already consumed by the native applier');
    this.taken = 'js';
    return this.fallback[Symbol.asyncIterator]();
  }
}

export const isFileRange = (s: TarFileRange | AsyncIterable<Uint8Array>): s is TarFileRange => typeof (s as TarFileRange).fd === 'number';
