import { existsSync } from 'node:fs';
import { CommandFailure, classify, run } from './exec.js';

const PKG = 'lvm2 (dmsetup)';

function dmsetup(args: readonly string[]): Promise<{ stdout: string }> {
  return run('dmsetup', args, PKG);
}

/** Fields of a thin-pool's `dmsetup status` line (see the kernel's thin-provisioning.rst). */
export interface PoolStatus {
  transactionId: number;
  usedMetadataBlocks: number;
  totalMetadataBlocks: number;
  usedDataBlocks: number;
  totalDataBlocks: number;
  /** `rw`, `ro` or `out_of_data_space`. */
  mode: string;
}

/** Metadata blocks of a thin pool are always 4 KiB. */
export const METADATA_BLOCK = 4096;

export function parsePoolStatus(line: string): PoolStatus {
  // "0 209715200 thin-pool 3 152/524288 8/1638400 - rw discard_passdown …"
  const f = line.trim().split(/\s+/);
  const i = f.indexOf('thin-pool');
  if (i < 0 || f.length < i + 5) throw new Error(`not a thin-pool status line: ${line}`);
  const [um, tm] = f[i + 2]!.split('/').map(Number);
  const [ud, td] = f[i + 3]!.split('/').map(Number);
  return {
    transactionId: Number(f[i + 1]),
    usedMetadataBlocks: um!, totalMetadataBlocks: tm!,
    usedDataBlocks: ud!, totalDataBlocks: td!,
    mode: f[i + 5] ?? 'rw',
  };
}

/** The device node dmsetup made (or udev made) for a name. */
export function devPath(name: string): string {
  return `/dev/mapper/${name}`;
}

export function isActive(name: string): boolean {
  return existsSync(devPath(name));
}

export async function poolStatus(pool: string): Promise<PoolStatus> {
  try {
    const { stdout } = await dmsetup(['status', pool]);
    return parsePoolStatus(stdout);
  } catch (err) {
    throw classify(err, `reading the status of thin pool ${pool}`, pool);
  }
}

export async function createDevice(name: string, table: string): Promise<void> {
  try {
    await dmsetup(['create', name, '--table', table]);
  } catch (err) {
    throw classify(err, `creating device-mapper device ${name}`, name);
  }
}

/**
 * What the kernel holds under a name: nothing, a device without a live table (a dmsetup
 * create killed before its table went live), or a live device. The /dev/mapper node is
 * not asked: a killed dmsetup may have left a device without one, or a node without device.
 */
export async function deviceState(name: string): Promise<'absent' | 'empty' | 'live'> {
  try {
    const { stdout } = await dmsetup(['table', name]);
    return stdout.trim() === '' ? 'empty' : 'live';
  } catch (err) {
    if (err instanceof CommandFailure && /No such device|does not exist|not found/i.test(err.stderr + err.stdout)) return 'absent';
    throw classify(err, `reading the table of ${name}`, name);
  }
}

/** Makes the /dev/mapper node of a device the kernel has (there is no udev to do it). */
export async function makeNode(name: string): Promise<void> {
  try { await dmsetup(['mknodes', name]); } catch (err) { throw classify(err, `making the node of ${name}`, name); }
}

/** Replaces a live device's table (suspend, load, resume), e.g. to grow a pool. */
export async function reloadDevice(name: string, table: string): Promise<void> {
  try {
    await dmsetup(['suspend', name]);
    try {
      await dmsetup(['load', name, '--table', table]);
    } finally {
      await dmsetup(['resume', name]);
    }
  } catch (err) {
    throw classify(err, `reloading device-mapper device ${name}`, name);
  }
}

/**
 * Removes a device; missing is fine. `deferred` lets the kernel finish once the last opener
 * closes it. `listed`: the kernel listed the device (`dmsetup ls`), so remove it even without
 * a /dev/mapper node: a dmsetup killed between creating a device and making its node (no
 * udev) leaves exactly that, and a thin device that stays active cannot be deleted.
 */
export async function removeDevice(name: string, deferred = false, listed = false): Promise<void> {
  if (!listed && !isActive(name)) return;
  try {
    await dmsetup(deferred ? ['remove', '--deferred', name] : ['remove', name]);
  } catch (err) {
    if (err instanceof CommandFailure && /No such device or address|not found/i.test(err.stderr)) return;
    throw classify(err, `removing device-mapper device ${name}`, name);
  }
}

function isNoDevice(err: unknown): boolean {
  return err instanceof CommandFailure && /No such device or address/i.test(err.stderr);
}

/**
 * Suspends a device if it is active; returns whether it was. A /dev/mapper node can
 * outlive its device (a node left behind without udev), so the kernel's answer counts.
 */
export async function suspendIfActive(name: string): Promise<boolean> {
  if (!isActive(name)) return false;
  try {
    await dmsetup(['suspend', name]);
    return true;
  } catch (err) {
    if (isNoDevice(err)) return false;
    throw classify(err, `suspending ${name}`, name);
  }
}

export async function resume(name: string): Promise<void> {
  try { await dmsetup(['resume', name]); } catch (err) { throw classify(err, `resuming ${name}`, name); }
}

/** A target message to a pool (`create_thin`, `create_snap`, `delete`, `set_transaction_id`). */
export async function poolMessage(pool: string, message: string): Promise<void> {
  await dmsetup(['message', pool, '0', message]);
}

/** True when a thin message failed because the device id is already taken. */
export function isIdTaken(err: unknown): boolean {
  return err instanceof CommandFailure && /File exists/i.test(err.stderr);
}

/** True when a thin message failed because the device id does not exist. */
export function isNoSuchThin(err: unknown): boolean {
  return err instanceof CommandFailure && /No data available|No such file or directory/i.test(err.stderr);
}

export async function targetVersions(): Promise<Map<string, string>> {
  const { stdout } = await dmsetup(['targets']);
  const out = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const [name, ver] = line.trim().split(/\s+/);
    if (name && ver) out.set(name, ver);
  }
  return out;
}

export async function libraryVersion(): Promise<string> {
  try {
    const { stdout } = await dmsetup(['version']);
    return /Library version:\s*(\S+)/.exec(stdout)?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Names of active device-mapper devices starting with `prefix`. */
export async function listDevices(prefix: string): Promise<string[]> {
  const { stdout } = await dmsetup(['ls']);
  return stdout.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n.startsWith(prefix));
}

export function thinTable(sizeBytes: number, poolDev: string, deviceId: number): string {
  return `0 ${Math.floor(sizeBytes / 512)} thin ${poolDev} ${deviceId}`;
}
