import { CairnError, parseByteSize } from '@cairnfs/core';

/** Driver options (`openDriver({ options })`), named as moby and containers/storage name them. */
export interface BtrfsOptions {
  /** `btrfs.min_space`: the smallest `size` a layer may ask for (moby). */
  minSpace: number | null;
  /** `btrfs.size`: default quota for container layers made without a `size` (containers/storage). */
  defaultSize: number | null;
}

/** Parses `btrfs.*` driver options; anything else under `btrfs.` is ERR_INVALID_OPTION. */
export function parseDriverOptions(options: Readonly<Record<string, string>>): BtrfsOptions {
  const parsed: BtrfsOptions = { minSpace: null, defaultSize: null };
  for (const [key, value] of Object.entries(options)) {
    switch (key) {
      case 'btrfs.min_space':
        parsed.minSpace = parseByteSize(value, key);
        break;
      case 'btrfs.size':
        parsed.defaultSize = parseByteSize(value, key) || null;
        break;
      default:
        if (key.startsWith('btrfs.')) {
          throw new CairnError('ERR_INVALID_OPTION',
            `unknown btrfs driver option ${JSON.stringify(key)}: the btrfs driver knows btrfs.min_space and btrfs.size`, { subject: key });
        }
    }
  }
  return parsed;
}

/**
 * The quota a layer asks for through `storageOpt` (`size`, as moby), or null. Checked
 * against `btrfs.min_space` as moby does ("storage size cannot be less than …").
 */
export function parseStorageOpt(storageOpt: Record<string, string> | undefined, opts: BtrfsOptions): number | null {
  let size: number | null = null;
  for (const [key, value] of Object.entries(storageOpt ?? {})) {
    if (key.toLowerCase() !== 'size') {
      throw new CairnError('ERR_INVALID_OPTION', `unknown storage option ${JSON.stringify(key)}: the btrfs driver knows only "size"`, { subject: key });
    }
    size = parseByteSize(value, 'storage option size') || null;
  }
  if (size !== null && opts.minSpace !== null && size < opts.minSpace) {
    throw new CairnError('ERR_INVALID_OPTION',
      `storage size ${size} bytes is less than btrfs.min_space (${opts.minSpace} bytes): ask for a larger size`, { subject: 'size' });
  }
  return size;
}
