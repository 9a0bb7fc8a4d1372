import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sh } from './harness.js';

/** A thin pool built by hand on two loop devices, as an administrator would for dm.thinpooldev. */
export interface RawPool { name: string; dev: string; destroy(): Promise<void> }

export async function makeRawPool(tag: string, dataSize = 2 * 2 ** 30): Promise<RawPool> {
  const dir = await mkdtemp(join(tmpdir(), `cairn-rawpool-${tag}-`));
  const data = join(dir, 'data');
  const meta = join(dir, 'meta');
  await writeFile(data, '');
  await writeFile(meta, '');
  await truncate(data, dataSize);
  await truncate(meta, 64 << 20);
  const dataDev = sh('losetup', ['-f', '--show', data]).trim();
  const metaDev = sh('losetup', ['-f', '--show', meta]).trim();
  const name = `cairn-test-${tag}-${process.pid}`;
  sh('dmsetup', ['create', name, '--table', `0 ${dataSize / 512} thin-pool ${metaDev} ${dataDev} 128 32768 1 skip_block_zeroing`]);
  return {
    name,
    dev: `/dev/mapper/${name}`,
    async destroy() {
      try { sh('dmsetup', ['remove', name]); } catch { /* already gone */ }
      for (const d of [dataDev, metaDev]) { try { sh('losetup', ['-d', d]); } catch { /* already gone */ } }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A sparse file on a loop device, to stand in for a disk (direct-lvm). */
export async function makeLoopDisk(tag: string, size: number): Promise<{ dev: string; destroy(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `cairn-disk-${tag}-`));
  const file = join(dir, 'disk');
  await writeFile(file, '');
  await truncate(file, size);
  const dev = sh('losetup', ['-f', '--show', file]).trim();
  return {
    dev,
    async destroy() {
      try { sh('losetup', ['-d', dev]); } catch { /* already gone */ }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
