import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  detectBackingFs, findMountOf, nameBackingFs, parseMountInfo, readMountInfo, supportsDType, unescapeMountField,
} from '@cairnfs/core';
import { describeBackend, loopFsMissing, makeLoopFs } from '@cairnfs/testkit';
import type { LoopFs } from '@cairnfs/testkit';

const run = promisify(execFile);

describe('mountinfo parsing', () => {
  const sample = [
    '27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard',
    '40 27 0:33 / /mnt/with\\040space rw,nosuid shared:5 master:2 - tmpfs my\\040tmp rw,size=4k',
    '41 27 0:34 / /var/lib/cairn/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir=/l/A:/l/B,upperdir=/u,workdir=/w',
    '42 27 0:35 /sub /srv/zfs rw - fuse.zfs pool/ds rw,user_id=0',
    'garbage line without separator',
  ].join('\n');

  test('decodes octal escapes and splits optional fields from the filesystem fields', () => {
    const [root, spaced, overlay, fuse] = parseMountInfo(sample);
    expect(root).toMatchObject({ mountId: 27, parentId: 1, device: '254:0', mountPoint: '/', fsType: 'ext4', source: '/dev/vda', optionalFields: [] });
    expect(spaced).toMatchObject({ mountPoint: '/mnt/with space', source: 'my tmp', optionalFields: ['shared:5', 'master:2'], mountOptions: 'rw,nosuid', options: 'rw,size=4k' });
    expect(overlay!.options).toBe('rw,lowerdir=/l/A:/l/B,upperdir=/u,workdir=/w');
    expect(fuse).toMatchObject({ root: '/sub', fsType: 'fuse.zfs', source: 'pool/ds' });
  });

  test('skips lines without the " - " separator instead of misreading them', () => {
    expect(parseMountInfo(sample)).toHaveLength(4);
  });

  test('unescapes backslash, tab and newline as well as space', () => {
    expect(unescapeMountField('a\\134b\\011c\\012d')).toBe('a\\b\tc\nd');
  });

  test('the live table has the root mount and is in kernel order', async () => {
    const table = await readMountInfo();
    expect(table.some((m) => m.mountPoint === '/')).toBe(true);
    expect(new Set(table.map((m) => m.mountId)).size).toBe(table.length);
  });
});

describe('nameBackingFs (the statfs magic table)', () => {
  test.each([
    [0xef53, 'extfs'], [0x58465342, 'xfs'], [0x9123683e, 'btrfs'], [0x2fc12fc1, 'zfs'],
    [0x794c7630, 'overlayfs'], [0x01021994, 'tmpfs'], [0x6969, 'nfs'], [0xf15f, 'ecryptfs'],
    [0x61756673, 'aufs'], [0x73717368, 'squashfs'], [0xff534d42, 'cifs'], [0x12345678, '<unknown>'],
  ])('magic %i is %s, as docker info prints it', (magic, name) => {
    expect(nameBackingFs(magic)).toEqual({ name, magic });
  });

  test('a negative (signed) f_type is read as unsigned', () => {
    expect(nameBackingFs(0x9123683e | 0)).toEqual({ name: 'btrfs', magic: 0x9123683e });
  });

  test('FUSE is named by its mountinfo subtype only for zfs-fuse', () => {
    expect(nameBackingFs(0x65735546, { fsType: 'fuse.zfs' })).toEqual({ name: 'zfs', magic: 0x65735546, fuseSubtype: 'zfs' });
    expect(nameBackingFs(0x65735546, { fsType: 'fuse.sshfs' })).toEqual({ name: 'fuse', magic: 0x65735546, fuseSubtype: 'sshfs' });
    expect(nameBackingFs(0x65735546, { fsType: 'fuseblk.ntfs' })).toMatchObject({ name: 'fuse', fuseSubtype: 'ntfs' });
    expect(nameBackingFs(0x65735546, { fsType: 'fuse' })).toEqual({ name: 'fuse', magic: 0x65735546 });
    expect(nameBackingFs(0x65735546)).toEqual({ name: 'fuse', magic: 0x65735546 });
  });
});

describe('detectBackingFs on paths that do not exist yet', () => {
  test('probes the nearest existing ancestor', async () => {
    const base = await mkdtemp(join(tmpdir(), 'cairn-bfs-'));
    try {
      const direct = await detectBackingFs(base);
      const missing = await detectBackingFs(join(base, 'not', 'there', 'yet'));
      expect(missing).toEqual(direct);
      expect(await readdir(base)).toEqual([]); // probing created nothing
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});

// One real filesystem per kind; each block checks the name moby would print, the
// d_type answer, and that the mount table lookup finds the mount holding the path.
const kinds = [
  { kind: 'tmpfs', name: 'tmpfs', magic: 0x01021994, fsType: 'tmpfs', mkfsArgs: [] as string[], dtype: true },
  { kind: 'ext4', name: 'extfs', magic: 0xef53, fsType: 'ext4', mkfsArgs: [], dtype: true },
  { kind: 'btrfs', name: 'btrfs', magic: 0x9123683e, fsType: 'btrfs', mkfsArgs: [], dtype: true },
  { kind: 'xfs', name: 'xfs', magic: 0x58465342, fsType: 'xfs', mkfsArgs: ['-n', 'ftype=1'], dtype: true },
] as const;

for (const k of kinds) {
  describeBackend(`loop-${k.kind}`, loopFsMissing(k.kind), () => {
    let fs: LoopFs;
    beforeAll(async () => { fs = await makeLoopFs(k.kind, { mkfsArgs: [...k.mkfsArgs] }); });
    afterAll(async () => { await fs?.dispose(); });

    test(`detectBackingFs names a ${k.kind} mount '${k.name}' with its statfs magic`, async () => {
      const sub = join(fs.dir, 'home');
      await mkdir(sub);
      expect(await detectBackingFs(sub)).toEqual({ name: k.name, magic: k.magic });
    });

    test(`supportsDType on ${k.kind} is ${k.dtype} and leaves nothing behind`, async () => {
      const before = await readdir(fs.dir);
      expect(await supportsDType(fs.dir)).toBe(k.dtype);
      expect(await readdir(fs.dir)).toEqual(before);
    });

    test(`findMountOf a file deep in the ${k.kind} mount returns that mount`, async () => {
      await mkdir(join(fs.dir, 'a', 'b'), { recursive: true });
      const mount = await findMountOf(join(fs.dir, 'a', 'b'));
      expect(mount).toMatchObject({ mountPoint: fs.dir, fsType: k.fsType });
    });
  });
}

// xfs with ftype=0 would be the classic d_type-less filesystem, but it needs the V4
// format, which this kernel (6.18, CONFIG_XFS_SUPPORT_V4 off) refuses to mount. ext4
// without the filetype feature gives the same DT_UNKNOWN entries.
describeBackend('loop-ext4', loopFsMissing('ext4'), () => {
  test('supportsDType is false on ext4 made without the filetype feature', async () => {
    const fs = await makeLoopFs('ext4', { sizeMiB: 32, mkfsArgs: ['-O', '^filetype'] });
    try {
      expect(await supportsDType(fs.dir)).toBe(false);
      expect(await supportsDType(join(fs.dir, 'missing', 'home'))).toBe(false);
      expect((await readdir(fs.dir)).sort()).toEqual(['lost+found']);
    } finally {
      await fs.dispose();
    }
  });
});

describeBackend('overlay', loopFsMissing('tmpfs'), () => {
  test("detectBackingFs names an overlay mount 'overlayfs'", async () => {
    const base = await mkdtemp(join(tmpdir(), 'cairn-bfs-ovl-'));
    const [lower, upper, work, merged] = ['lower', 'upper', 'work', 'merged'].map((d) => join(base, d)) as [string, string, string, string];
    let mounted = false;
    try {
      for (const d of [lower, upper, work, merged]) await mkdir(d);
      await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, merged]);
      mounted = true;
      expect(await detectBackingFs(merged)).toEqual({ name: 'overlayfs', magic: 0x794c7630 });
      const mount = await findMountOf(merged);
      expect(mount?.fsType).toBe('overlay');
      expect(mount?.options).toContain(`upperdir=${upper}`);
    } finally {
      if (mounted) await run('umount', [merged]);
      await rm(base, { recursive: true, force: true });
    }
  });

  test('findMountOf finds a mount point whose name has a space (\\040 in mountinfo)', async () => {
    const base = await mkdtemp(join(tmpdir(), 'cairn-bfs-space-'));
    const point = join(base, 'a b');
    let mounted = false;
    try {
      await mkdir(point);
      await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'space src', point]);
      mounted = true;
      await mkdir(join(point, 'inner'));
      const mount = await findMountOf(join(point, 'inner'));
      expect(mount).toMatchObject({ mountPoint: point, fsType: 'tmpfs', source: 'space src' });
      expect(await detectBackingFs(join(point, 'inner'))).toMatchObject({ name: 'tmpfs' });
    } finally {
      if (mounted) await run('umount', [point]);
      await rm(base, { recursive: true, force: true });
    }
  });
});
