// withUserNamespace keeps the namespaces it makes for the next call with the same maps
// (making one clones a process), and keeps at most a few idle ones open.
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { probeIdmappedMounts, withUserNamespace } from '@cairnfs/core';
import * as sys from '@cairnfs/sys';
import { describeBackend } from '@cairnfs/testkit';

const shift = (base: number) => ({ uidMap: [{ containerId: 0, hostId: base, size: 65536 }], gidMap: [{ containerId: 0, hostId: base, size: 65536 }] });

/** The user namespaces this process holds fds of. */
function heldNamespaces(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const l = readlinkSync(`/proc/self/fd/${fd}`);
      if (l.startsWith('user:[')) out.push(l);
    } catch { /* closed meanwhile */ }
  }
  return out;
}

describeBackend('root', process.getuid?.() === 0 ? null : 'making a user namespace with ranges of other ids needs root', () => {
  test('the same maps give the same namespace again; 20 different maps leave at most 8 idle namespaces open', async () => {
    const before = heldNamespaces().length;
    const first = await withUserNamespace(shift(300000), async (fd) => readlinkSync(`/proc/self/fd/${fd}`));
    const again = await withUserNamespace(shift(300000), async (fd) => readlinkSync(`/proc/self/fd/${fd}`));
    expect(first).toMatch(/^user:\[\d+\]$/);
    expect(again).toBe(first);
    const seen: string[] = [];
    for (let i = 1; i <= 20; i++) seen.push(await withUserNamespace(shift(300000 + 65536 * i), async (fd) => readlinkSync(`/proc/self/fd/${fd}`)));
    // Only namespaces alive at once are told apart by their inode number: the kernel reuses
    // a closed one's (in a full CI run, 20 maps showed 11 numbers). The 8 most recent are
    // still kept open, so they must be 8 different namespaces.
    expect(new Set(seen.slice(-8)).size).toBe(8);
    expect(heldNamespaces().length - before).toBeLessThanOrEqual(8);
  });

  test('a namespace in use is not closed under its user, however many others are made meanwhile', async () => {
    await withUserNamespace(shift(900000), async (fd) => {
      const mine = readlinkSync(`/proc/self/fd/${fd}`);
      for (let i = 1; i <= 12; i++) await withUserNamespace(shift(900000 + 65536 * i), async () => undefined);
      expect(readlinkSync(`/proc/self/fd/${fd}`)).toBe(mine);
    });
  });

  test('the id-mapped mount probe writes nothing and mounts nothing: it works on a read-only directory and leaves no mount under it (a kill midway can leave nothing behind)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cairn-idmap-probe-'));
    const c = sys.constants;
    await sys.mount(dir, dir, null, c.MS_BIND);
    try {
      await sys.mount(dir, dir, null, c.MS_BIND | c.MS_REMOUNT | c.MS_RDONLY);
      // Other tests mount meanwhile: only what is under `dir` counts.
      const under = () => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(`${dir}/`));
      expect(await probeIdmappedMounts(dir)).toBeNull();
      expect(readdirSync(dir)).toEqual([]);
      expect(under()).toEqual([]);
    } finally {
      await sys.umount2(dir, c.MNT_DETACH);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
