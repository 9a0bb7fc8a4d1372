import { mkdir, open, stat } from 'node:fs/promises';
import { CairnError, errnoCode } from '@cairnfs/core';
import { createDevice, devPath, deviceState, isActive, makeNode, poolStatus, reloadDevice, removeDevice } from './dmsetup.js';
import type { Layout } from './layout.js';
import { run } from './exec.js';
import { attachLoop, detachLoop, loopFor, refreshLoopCapacity } from './loop.js';
import { setupDirectLvm } from './lvm.js';
import type { DmOptions } from './options.js';

export type PoolMode = 'loop-lvm' | 'thinpooldev' | 'direct-lvm';

export interface Pool {
  mode: PoolMode;
  /** device-mapper name of the thin pool. */
  name: string;
  /** /dev/mapper path, used in thin tables. */
  dev: string;
  /** Pool block size in bytes. */
  blockSize: number;
  /** loop-lvm only. */
  loop?: { dataFile: string; metadataFile: string; dataDev: string; metadataDev: string };
}

/** Blocks below which the kernel raises a low-water event (moby's value). */
const LOW_WATER_BLOCKS = 32768;

/**
 * Makes the sparse file at least `size` bytes. An explicitly requested size smaller than
 * the file is refused: a thin pool cannot shrink. Returns whether the file grew.
 */
async function ensureSparse(path: string, size: number, explicit: boolean, option: string): Promise<boolean> {
  let current = -1;
  try {
    current = (await stat(path)).size;
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  if (current > size) {
    if (!explicit) return false;
    throw new CairnError('ERR_INVALID_OPTION',
      `${option} asks for ${size} bytes but ${path} is already ${current} bytes; loop files can grow, never shrink`, { subject: option });
  }
  if (current === size) return false;
  const handle = await open(path, current < 0 ? 'w' : 'r+', 0o600);
  try {
    await handle.truncate(size);
  } finally {
    await handle.close();
  }
  return current >= 0;
}

/** Sets up (or finds, or grows) the thin pool the options name. */
export async function openPool(opts: DmOptions, layout: Layout, blockSize: number): Promise<Pool> {
  if (opts.thinPoolDev) {
    const name = opts.thinPoolDev.replace(/^\/dev\/mapper\//, '');
    if (!isActive(name)) {
      throw new CairnError('ERR_INVALID_OPTION', `dm.thinpooldev=${opts.thinPoolDev}: no such active device-mapper device`, { subject: 'dm.thinpooldev' });
    }
    await poolStatus(name).catch((err: unknown) => {
      throw new CairnError('ERR_INVALID_OPTION', `dm.thinpooldev=${opts.thinPoolDev} is not a thin pool`, { subject: 'dm.thinpooldev', cause: err });
    });
    return { mode: 'thinpooldev', name, dev: devPath(name), blockSize: await poolBlockSize(name, blockSize) };
  }
  if (opts.directLvmDevice) {
    const name = await setupDirectLvm(opts, layout.lvmSetupFile);
    return { mode: 'direct-lvm', name, dev: devPath(name), blockSize: await poolBlockSize(name, blockSize) };
  }
  await mkdir(layout.loopDir, { recursive: true, mode: 0o700 });
  const grewData = await ensureSparse(layout.dataFile, opts.loopDataSize, opts.loopDataSizeSet, 'dm.loopdatasize');
  const grewMeta = await ensureSparse(layout.metadataFile, opts.loopMetadataSize, opts.loopMetadataSizeSet, 'dm.loopmetadatasize');
  const dataDev = await attachLoop(layout.dataFile);
  const metadataDev = await attachLoop(layout.metadataFile);
  if (grewData) await refreshLoopCapacity(dataDev);
  if (grewMeta) await refreshLoopCapacity(metadataDev);
  const blockSectors = blockSize / 512;
  const dataSize = (await stat(layout.dataFile)).size;
  const dataSectors = Math.floor(dataSize / 512 / blockSectors) * blockSectors;
  const table = `0 ${dataSectors} thin-pool ${metadataDev} ${dataDev} ${blockSectors} ${LOW_WATER_BLOCKS} 1 skip_block_zeroing`;
  // A process killed while it set the pool up may have left it without a table or without
  // its node: the kernel's view decides, so the next open repairs it instead of failing.
  let state = await deviceState(layout.poolName);
  if (state === 'empty') {
    await removeDevice(layout.poolName, false, true);
    state = 'absent';
  }
  if (state === 'absent') {
    await createDevice(layout.poolName, table);
  } else {
    if (!isActive(layout.poolName)) await makeNode(layout.poolName);
    if (grewData || grewMeta) await reloadDevice(layout.poolName, table);
  }
  return {
    mode: 'loop-lvm', name: layout.poolName, dev: devPath(layout.poolName), blockSize,
    loop: { dataFile: layout.dataFile, metadataFile: layout.metadataFile, dataDev, metadataDev },
  };
}

async function poolBlockSize(name: string, fallback: number): Promise<number> {
  const { stdout } = await run('dmsetup', ['table', name], 'lvm2 (dmsetup)');
  const f = stdout.trim().split(/\s+/);
  const i = f.indexOf('thin-pool');
  const sectors = i >= 0 ? Number(f[i + 3]) : NaN;
  return Number.isFinite(sectors) ? sectors * 512 : fallback;
}

/** loop-lvm: removes the pool and detaches its loop devices (the files stay). Other modes keep the pool. */
export async function closePool(pool: Pool): Promise<void> {
  if (pool.mode !== 'loop-lvm' || !pool.loop) return;
  await removeDevice(pool.name);
  for (const file of [pool.loop.dataFile, pool.loop.metadataFile]) {
    const dev = await loopFor(file);
    if (dev) await detachLoop(dev);
  }
}
