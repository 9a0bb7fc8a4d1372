import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readMountInfo } from '@cairnfs/core';
import * as sys from '@cairnfs/sys';
import { Overlay2Driver, overlay2Driver, probeOverlay } from '@cairnfs/overlay2';
import type { DriverHarness } from '@cairnfs/testkit';

/** Why the real-overlayfs tests cannot run here, or null when they can. */
export async function overlayMissing(): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'needs root to mount overlayfs';
  const dir = await mkdtemp(join(tmpdir(), 'cairn-ovl-probe-'));
  try {
    const p = await probeOverlay(join(dir, 'overlay2'));
    return p.usable ? null : p.reason;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Unmounts every mount under `dir` (deepest first), whatever left them there. */
export async function unmountUnder(dir: string): Promise<void> {
  const mounts = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${dir}/`));
  for (const m of mounts.reverse()) await sys.umount2(m.mountPoint, sys.constants.MNT_DETACH).catch(() => undefined);
}

export interface Home {
  root: string;
  home: string;
  open(options?: Record<string, string>): Promise<Overlay2Driver>;
  /** Cleans up every driver opened, unmounts anything left under the root, deletes it. */
  dispose(): Promise<void>;
}

export async function makeHome(prefix = 'cairn-ovl-', base = tmpdir()): Promise<Home> {
  const root = await mkdtemp(join(base, prefix));
  const home = join(root, 'overlay2');
  const opened: Overlay2Driver[] = [];
  return {
    root,
    home,
    async open(options = {}) {
      const d = await overlay2Driver.open({ root, home, options, lockTimeoutMs: 0 }) as Overlay2Driver;
      opened.push(d);
      return d;
    },
    async dispose() {
      for (const d of opened) await d.cleanup().catch(() => undefined);
      await unmountUnder(root);
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** A conformance-suite harness on a fresh home. */
export async function harness(options: Record<string, string> = {}): Promise<DriverHarness> {
  const h = await makeHome();
  let driver = await h.open(options);
  return {
    get driver() { return driver; },
    async reopen() {
      await driver.cleanup();
      driver = await h.open(options);
      return driver;
    },
    dispose: () => h.dispose(),
  };
}

/** Overlay mounts whose mount point is under `dir`. */
export async function overlayMountsUnder(dir: string) {
  return (await readMountInfo()).filter((m) => m.fsType === 'overlay' && m.mountPoint.startsWith(`${dir}/`));
}
