// overlay2 with overlay2.mount_program = fuse-overlayfs (Debian fuse-overlayfs): the whole
// conformance suite with the mounts made by the FUSE program instead of the kernel, and
// what status and the probe say. (The same suite runs rootless in packages/cairnfs/test/rootless.test.ts.)
import { accessSync, constants } from 'node:fs';
import { describeBackend, driverConformanceSuite } from '@cairnfs/testkit';
import { harness, makeHome } from './helpers.js';

const FUSE_OVERLAYFS = '/usr/bin/fuse-overlayfs';
const missing = (() => {
  if (process.getuid?.() !== 0) return 'needs root';
  try {
    accessSync(FUSE_OVERLAYFS, constants.X_OK);
    accessSync('/dev/fuse', constants.R_OK | constants.W_OK);
    return null;
  } catch {
    return `${FUSE_OVERLAYFS} or /dev/fuse is missing; run scripts/install-deps.sh (fuse-overlayfs) and modprobe fuse`;
  }
})();

describeBackend('fuse-overlayfs', missing, () => {
  const options = { 'overlay2.mount_program': FUSE_OVERLAYFS };
  driverConformanceSuite('overlay2 (mount_program=fuse-overlayfs)', () => harness(options));

  test('status names the program, native diff is off, id-mapped gets make chown copies', async () => {
    const h = await makeHome();
    try {
      const d = await h.open(options);
      const status = new Map(await d.status());
      expect(status.get('Mount program')).toBe(FUSE_OVERLAYFS);
      expect(status.get('Native Overlay Diff')).toBe('false');
      expect(status.get('Id-mapped mounts')).toMatch(/^no, chown copies \(overlay2.mount_program=/);
    } finally {
      await h.dispose();
    }
  });

  test('a mount_program that does not exist is refused at open with what to install', async () => {
    const h = await makeHome();
    try {
      await expect(h.open({ 'overlay2.mount_program': '/nonexistent/fuse-overlayfs' })).rejects.toMatchObject({ code: 'ERR_PREREQUISITES', message: expect.stringMatching(/apt-get install fuse-overlayfs/) });
    } finally {
      await h.dispose();
    }
  });
});
