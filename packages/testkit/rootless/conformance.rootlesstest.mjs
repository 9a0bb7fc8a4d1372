// The driver conformance suite of vfs and overlay2 run rootless: as root of a user namespace
// that a real unprivileged user made with `cairn unshare` (its /etc/subuid range mapped).
// Plain JavaScript against the built packages (dist/): inside a user namespace every
// directory above the user's own shows as owned by "nobody", and the TypeScript
// transformer's native loader refuses to unpack itself under such parents, so this file
// needs no transform. Started by packages/cairnfs/test/rootless.test.ts, never by the host's jest.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeBackend, driverConformanceSuite } from '@cairnfs/testkit';
import { vfsDriver } from '@cairnfs/vfs';
import { overlay2Driver } from '@cairnfs/overlay2';

const inside = process.env.CAIRN_ROOTLESS_UID ? null : 'runs only inside `cairn unshare` (packages/cairnfs/test/rootless.test.ts starts it)';

function harnessOf(factory, options = {}) {
  return async () => {
    const root = await mkdtemp(join(tmpdir(), `cairn-${factory.name}-rootless-`));
    const ctx = { root, home: join(root, factory.name), options, lockTimeoutMs: 0 };
    const opened = [await factory.open(ctx)];
    return {
      get driver() { return opened[opened.length - 1]; },
      reopen: async () => { const d = await factory.open(ctx); opened.push(d); return d; },
      dispose: async () => {
        for (const d of opened) await d.cleanup().catch(() => undefined);
        await rm(root, { recursive: true, force: true });
      },
    };
  };
}

// vfs; overlay2 on the kernel's overlay (userxattr); overlay2 with fuse-overlayfs as its mount program.
const variants = {
  vfs: [vfsDriver, {}],
  overlay2: [overlay2Driver, {}],
  'overlay2-fuse': [overlay2Driver, { 'overlay2.mount_program': '/usr/bin/fuse-overlayfs' }],
};

describeBackend('rootless', inside, () => {
  for (const name of (process.env.CAIRN_ROOTLESS_DRIVERS ?? 'vfs,overlay2,overlay2-fuse').split(',')) {
    const [factory, options] = variants[name];
    driverConformanceSuite(`${name} (rootless)`, harnessOf(factory, options), { rootless: true });
  }
});
