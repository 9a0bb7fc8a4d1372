import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StorageDriver } from '@cairnfs/core';
import { devicemapperDriver } from '@cairnfs/devicemapper';
import type { DriverHarness } from '@cairnfs/testkit';

/** Small loop-lvm pools keep each fresh home cheap under emulation (sparse files on the guest's tmpfs). */
export const SMALL_POOL = { 'dm.loopdatasize': '1G', 'dm.loopmetadatasize': '32M' };

export interface Home { root: string; home: string; options: Record<string, string> }

export async function newHome(options: Record<string, string>): Promise<Home> {
  const root = await mkdtemp(join(tmpdir(), 'cairn-dm-'));
  return { root, home: join(root, 'devicemapper'), options };
}

export function openAt(h: Home, options: Record<string, string> = h.options): Promise<StorageDriver> {
  return devicemapperDriver.open({ root: h.root, home: h.home, options, lockTimeoutMs: 0 });
}

/** A harness for the conformance suite and our own tests: every opened driver is cleaned up, the home deleted. */
export async function harness(options: Record<string, string>): Promise<DriverHarness & { home: Home }> {
  const h = await newHome(options);
  const opened: StorageDriver[] = [];
  const open = async (): Promise<StorageDriver> => {
    const d = await openAt(h);
    opened.push(d);
    return d;
  };
  const driver = await open();
  return {
    home: h,
    driver,
    reopen: open,
    async dispose() {
      for (const d of opened) await d.cleanup().catch(() => undefined);
      await rm(h.root, { recursive: true, force: true });
    },
  };
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', env: { ...process.env, DM_DISABLE_UDEV: '1' } });
}

/** Used data blocks of a pool, straight from the kernel (`dmsetup status`). */
export function usedDataBlocks(pool: string): number {
  const f = sh('dmsetup', ['status', pool]).trim().split(/\s+/);
  return Number(f[f.indexOf('thin-pool') + 3]!.split('/')[0]);
}
