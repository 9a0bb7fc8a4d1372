export type { TarEntry, TarEntryType, SparseMap, SparseSegment } from './entry.js';
export { TAR_LIMITS, TarParser, type TarHandler } from './tar-parser.js';
export { readTar, type TarItem } from './read-tar.js';
export { encodeHeader, encodeHeaderInto, packEntries, tarTrailer, type TarHeaderInput, type TarSourceEntry } from './tar-writer.js';
export { splitEntryPath, classifyWhiteout, type WhiteoutKind } from './safe-path.js';
export { applyLayer, type ApplyOptions, type WhiteoutMode } from './apply.js';
export { exportChanges, exportOverlayUpper, exportTree, type ExportOptions } from './export.js';
