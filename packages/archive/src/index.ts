// @cairnfs/archive: the OCI changeset engine. Tar read and write, layer apply and export,
// the change walk between two trees, and the naive (mount-and-compare) diff that drivers
// without a native diff use. Every name below is public API.
export type { TarEntry, TarEntryType, SparseMap, SparseSegment } from './entry.js';
export { TAR_LIMITS, TarParser, type TarHandler } from './tar-parser.js';
export { readTar, type TarItem } from './read-tar.js';
export { encodeHeader, encodeHeaderInto, packEntries, tarTrailer, type TarHeaderInput, type TarSourceEntry } from './tar-writer.js';
export { splitEntryPath, classifyWhiteout, type WhiteoutKind } from './safe-path.js';
export type { ApplyOptions, WhiteoutMode } from './apply-options.js';
export { applyLayer } from './apply.js';
export { TappedTar, type TarCompressed, type TarFileRange, type TarTap, type TapResult } from './tapped.js';
export { exportChanges, exportOverlayUpper, exportTree, type ExportOptions } from './export.js';
export { writeExportTo, directStream, type DirectPack } from './export-to-fd.js';
export { changesBetween, diffSizeOf, sortChanges, statDiffers, type ChangesOptions } from './changes.js';
export { NaiveDiff, NaiveDiffDriver, type NaiveDiffHost, type NaiveDiffOptions } from './naivediff.js';
