import { detectBackingFs } from '@cairnfs/core';
import { METADATA_BLOCK, libraryVersion, poolStatus } from './dmsetup.js';
import { udevRunning } from './exec.js';
import { humanSize } from './options.js';
import type { DmFs, DmOptions } from './options.js';
import type { Pool } from './pool.js';

/** What `status()` reports, as moby's devicemapper `Status()` (pool usage from `dmsetup status`). */
export async function statusRows(
  home: string, pool: Pool, opts: DmOptions, baseSize: number, fs: DmFs, deferredDeleted: number,
): Promise<Array<[string, string]>> {
  const s = await poolStatus(pool.name);
  const dataUsed = s.usedDataBlocks * pool.blockSize;
  const dataTotal = s.totalDataBlocks * pool.blockSize;
  const metaUsed = s.usedMetadataBlocks * METADATA_BLOCK;
  const metaTotal = s.totalMetadataBlocks * METADATA_BLOCK;
  const minFree = Math.floor(dataTotal * opts.minFreeSpacePercent / 100);
  let backing = 'unknown';
  try { backing = (await detectBackingFs(home)).name; } catch { /* keep unknown */ }
  const out: Array<[string, string]> = [
    ['Pool Name', pool.name],
    ['Pool Mode', pool.mode === 'loop-lvm' ? 'loop-lvm (loopback files: for testing only, not for production)' : pool.mode],
    ['Pool Blocksize', humanSize(pool.blockSize)],
    ['Base Device Size', humanSize(baseSize)],
    ['Backing Filesystem', fs === 'ext4' ? 'extfs' : 'xfs'],
    ['Home Filesystem', backing],
    ['Udev Sync Supported', String(udevRunning())],
  ];
  if (pool.loop) {
    out.push(['Data file', pool.loop.dataDev], ['Metadata file', pool.loop.metadataDev]);
  }
  out.push(
    ['Data Space Used', humanSize(dataUsed)],
    ['Data Space Total', humanSize(dataTotal)],
    ['Data Space Available', humanSize(dataTotal - dataUsed)],
    ['Metadata Space Used', humanSize(metaUsed)],
    ['Metadata Space Total', humanSize(metaTotal)],
    ['Metadata Space Available', humanSize(metaTotal - metaUsed)],
    ['Thin Pool Minimum Free Space', humanSize(minFree)],
    ['Deferred Removal Enabled', String(opts.deferredRemoval)],
    ['Deferred Deletion Enabled', String(opts.deferredDeletion)],
    ['Deferred Deleted Device Count', String(deferredDeleted)],
  );
  if (pool.loop) {
    out.push(['Data loop file', pool.loop.dataFile], ['Metadata loop file', pool.loop.metadataFile]);
  }
  out.push(['Library Version', await libraryVersion()]);
  return out;
}
