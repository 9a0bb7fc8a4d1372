// Loose or foreign-owned state directories (issue 13, finding 12): a pre-existing 0777
// storage root stayed 0777 (moby tightens it to 0711), and a driver home or image store
// pre-created by another user was used as is, so that user could rename l/ and layer
// directories. The root, every home (through the home lock every driver opens under),
// overlay2's l/ and the image store now go through core's secureDir.
import { chmod, chown, lchown, mkdir, mkdtemp, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CairnError, ROOT_DIR_MODE, acquireHomeLock, defaultRegistry, openDriver, secureDir } from '@cairnfs/core';
import { vfsDriver } from '@cairnfs/vfs';
import { overlay2Driver } from '@cairnfs/overlay2';
import { LayerStore } from '@cairnfs/image';

for (const f of [vfsDriver, overlay2Driver]) defaultRegistry.register(f);

const STRANGER = 12345; // a uid that is neither root nor this process

const modeOf = async (p: string) => (await stat(p)).mode & 0o7777;

async function refusal(p: Promise<unknown>): Promise<CairnError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(CairnError);
  return err as CairnError;
}

describe('state directories only root and the caller control', () => {
  let base: string;
  beforeEach(async () => { base = await mkdtemp(join(tmpdir(), 'cairn-securedir-')); });
  afterEach(async () => { await rm(base, { recursive: true, force: true }); });

  test('a pre-existing 0777 storage root is tightened to 0711, a loose home to its driver mode', async () => {
    const root = join(base, 'root');
    await mkdir(join(root, 'vfs'), { recursive: true });
    await chmod(root, 0o777);
    await chmod(join(root, 'vfs'), 0o777);
    const driver = await openDriver({ root, driver: 'vfs' });
    try {
      expect(await modeOf(root)).toBe(ROOT_DIR_MODE);
      expect(await modeOf(join(root, 'vfs'))).toBe(0o700);
    } finally { await driver.cleanup(); }
  });

  test('overlay2: a loose home becomes 0710 and a loose l/ 0700', async () => {
    const root = join(base, 'root');
    await mkdir(join(root, 'overlay2', 'l'), { recursive: true });
    await chmod(join(root, 'overlay2'), 0o777);
    await chmod(join(root, 'overlay2', 'l'), 0o777);
    const driver = await openDriver({ root, driver: 'overlay2' });
    try {
      expect(await modeOf(join(root, 'overlay2'))).toBe(0o710);
      expect(await modeOf(join(root, 'overlay2', 'l'))).toBe(0o700);
    } finally { await driver.cleanup(); }
  });

  test.each([
    ['the storage root', (root: string) => root],
    ['a driver home', (root: string) => join(root, 'vfs')],
  ])('%s owned by another user is refused, naming the path and the owner', async (_what, pick) => {
    const root = join(base, 'root');
    await mkdir(join(root, 'vfs'), { recursive: true });
    await chown(pick(root), STRANGER, STRANGER);
    const err = await refusal(openDriver({ root, driver: 'vfs' }));
    expect(err.code).toBe('ERR_INVALID_OPTION');
    expect(err.message).toContain(pick(root));
    expect(err.message).toContain(`uid ${STRANGER}`);
  });

  test("overlay2's l/ owned by another user is refused", async () => {
    const root = join(base, 'root');
    await mkdir(join(root, 'overlay2', 'l'), { recursive: true });
    await chown(join(root, 'overlay2', 'l'), STRANGER, STRANGER);
    const err = await refusal(openDriver({ root, driver: 'overlay2' }));
    expect(err.code).toBe('ERR_INVALID_OPTION');
    expect(err.message).toContain(join(root, 'overlay2', 'l'));
  });

  test('a home that is a symlink another user made is refused; one root made is followed', async () => {
    const elsewhere = join(base, 'elsewhere');
    await mkdir(elsewhere);
    const home = join(base, 'home');
    await symlink(elsewhere, home);
    await lchown(home, STRANGER, STRANGER);
    const err = await refusal(acquireHomeLock(home));
    expect(err.message).toMatch(/is a symlink owned by uid 12345/);
    await lchown(home, 0, 0);
    const lock = await acquireHomeLock(home);
    await lock.release();
  });

  test('an image store directory owned by another user is refused', async () => {
    const root = join(base, 'root');
    const driver = await openDriver({ root, driver: 'vfs' });
    try {
      await mkdir(join(root, 'image', 'vfs'), { recursive: true });
      await chown(join(root, 'image', 'vfs'), STRANGER, STRANGER);
      const err = await refusal(LayerStore.open(driver));
      expect(err.code).toBe('ERR_INVALID_OPTION');
      expect(err.message).toContain(join(root, 'image', 'vfs'));
      await chown(join(root, 'image', 'vfs'), 0, 0);
      await chmod(join(root, 'image'), 0o777);
      await LayerStore.open(driver);
      expect(await modeOf(join(root, 'image'))).toBe(0o700);
    } finally { await driver.cleanup(); }
  });

  test('secureDir creates missing directories with the mode, not the umask', async () => {
    const p = join(base, 'a', 'b');
    await secureDir(p, 0o711, 'test dir');
    expect(await modeOf(p)).toBe(0o711);
  });
});
