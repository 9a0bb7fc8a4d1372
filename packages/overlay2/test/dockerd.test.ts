/**
 * overlay2's Docker compatibility, proved against a real moby dockerd (Debian's docker.io
 * 20.10, started privately by the testkit): an image built offline by dockerd is read in
 * place by cairn from a copy of dockerd's data root, its layers' changes and diffs are
 * checked, and the `docker save` of it re-imported through @cairnfs/image gives the same trees.
 *
 * Comparisons with what docker itself produces (export, save) account for two things
 * Docker's tar writer does, seen in its output here: mtimes are whole seconds, and of all
 * xattrs only `security.capability` is written. The layer on disk keeps every xattr
 * (checked below), so cairn's in-place trees are compared with the other xattrs dropped.
 */
import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, mkdtemp, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import type { Change } from '@cairnfs/core';
import { LayerStore, exportImage } from '@cairnfs/image';
import { Overlay2Driver } from '@cairnfs/overlay2';
import * as sys from '@cairnfs/sys';
import { BUSYBOX, busyboxMissing, describeBackend, dockerdMissing, expectSameTree, snapshotTree, startDockerd } from '@cairnfs/testkit';
import type { DockerdFixture, TreeSnapshot } from '@cairnfs/testkit';
import { makeHome, overlayMissing, unmountUnder } from './helpers.js';
import type { Home } from './helpers.js';

const run = promisify(execFile);
// The base image is made offline from the host's static busybox.
const missing = dockerdMissing() ?? busyboxMissing() ?? await overlayMissing();

/** Busybox applets the Dockerfile's RUN steps use. */
const APPLETS = ['sh', 'ls', 'mkdir', 'rm', 'cp', 'mv', 'chmod', 'chown', 'ln', 'echo', 'cat', 'touch', 'mknod'];
/** A file capability (cap_net_bind_service, permitted+effective) as the kernel stores it. */
const CAPABILITY = Buffer.from('0100000200040000000000000000000000000000', 'hex');

/**
 * Each RUN/COPY is one layer; together they add, change and delete files, replace a
 * directory (opaque), chown, chmod, setuid, hardlink, symlink, make a fifo, and copy up a
 * file whose xattrs came with the base image.
 */
const DOCKERFILE = `FROM cairn-base:1
RUN mkdir -p /data/keep /data/replace/sub /data/gone && echo a > /data/keep/a && echo old > /data/replace/sub/x && echo bye > /data/gone/f && echo orig > /data/change && echo del > /data/delme
RUN echo changed > /data/change && rm /data/delme && rm -rf /data/gone /data/replace && mkdir /data/replace && echo new > /data/replace/y && rm /bin/touch
RUN chown 1000:2000 /data/keep/a && chmod 4755 /data/keep/a && ln /data/keep/a /data/keep/hard && ln -s ../keep/a /data/link && mknod /data/fifo p && chmod 0750 /bin/capfile
COPY --chown=123:456 copied /data/copied
`;

/** What each layer above the base did, as changes against its parent (sorted by path). */
const EXPECTED_CHANGES: Change[][] = [
  [
    { path: '/data', kind: 'add' }, { path: '/data/change', kind: 'add' }, { path: '/data/delme', kind: 'add' },
    { path: '/data/gone', kind: 'add' }, { path: '/data/gone/f', kind: 'add' }, { path: '/data/keep', kind: 'add' },
    { path: '/data/keep/a', kind: 'add' }, { path: '/data/replace', kind: 'add' }, { path: '/data/replace/sub', kind: 'add' },
    { path: '/data/replace/sub/x', kind: 'add' },
  ],
  [
    { path: '/bin', kind: 'modify' }, { path: '/bin/touch', kind: 'delete' }, { path: '/data', kind: 'modify' },
    { path: '/data/change', kind: 'modify' }, { path: '/data/delme', kind: 'delete' }, { path: '/data/gone', kind: 'delete' },
    { path: '/data/replace', kind: 'modify' }, { path: '/data/replace/sub', kind: 'delete' }, { path: '/data/replace/y', kind: 'add' },
  ],
  [
    { path: '/bin', kind: 'modify' }, { path: '/bin/capfile', kind: 'modify' }, { path: '/data', kind: 'modify' },
    { path: '/data/fifo', kind: 'add' }, { path: '/data/keep', kind: 'modify' }, { path: '/data/keep/a', kind: 'modify' },
    { path: '/data/keep/hard', kind: 'add' }, { path: '/data/link', kind: 'add' },
  ],
  [{ path: '/data', kind: 'modify' }, { path: '/data/copied', kind: 'add' }],
];

/** The tree as Docker's tar writer can represent it: whole-second mtimes, only security.capability. */
function asDockerTar(tree: TreeSnapshot): TreeSnapshot {
  const out: TreeSnapshot = new Map();
  for (const [path, e] of tree) {
    const xattrs: Record<string, string> = {};
    if (e.xattrs['security.capability']) xattrs['security.capability'] = e.xattrs['security.capability'];
    out.set(path, { ...e, mtimeNs: ((BigInt(e.mtimeNs) / 1_000_000_000n) * 1_000_000_000n).toString(), xattrs });
  }
  return out;
}

function sortChanges(changes: Change[]): Change[] {
  return [...changes].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

async function gnuTar(args: string[]): Promise<void> {
  await run('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', ...args], { maxBuffer: 64 * 1024 * 1024 });
}

/** `docker export` of a container into `file`; resolves the file's path. */
async function dockerExport(dockerd: DockerdFixture, cid: string, file: string): Promise<string> {
  await dockerd.docker(['export', '-o', file, cid]);
  return file;
}

/** Every entry of an overlay2 home one level into each layer dir, with its mode: `{ '<id>': ['diff 40755', …] }`. */
async function listLayout(home: string): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const name of (await readdir(home)).sort()) {
    const st = await lstat(join(home, name));
    if (!st.isDirectory()) { out[name] = [st.mode.toString(8)]; continue; }
    const entries: string[] = [];
    for (const e of (await readdir(join(home, name))).sort()) {
      const est = await lstat(join(home, name, e));
      entries.push(`${e} ${est.mode.toString(8)}${est.isSymbolicLink() ? ` -> ${await readlink(join(home, name, e))}` : ''}`);
    }
    out[name] = entries;
  }
  return out;
}

describeBackend('dockerd', missing, () => {
  let dockerd: DockerdFixture;
  let work: string;
  /** cairn's view of the copied Docker data root. */
  let inPlace: Home;
  let driver: Overlay2Driver;
  /** Image layer ids (overlay2 cache ids), bottom first. */
  let layers: string[];
  let containerLayer: string;
  let initLayer: string;
  let imageId: string;
  let exportTree: TreeSnapshot;
  let saveTar: string;
  /** Docker's id of the container created from the image. */
  let containerId: string;
  /** The store holding the image re-imported from docker save (set by that test). */
  let reimported: LayerStore | undefined;
  /** The copied store's overlay2 layout before cairn opened it. */
  let layoutBefore: Record<string, string[]>;
  const fresh: Home[] = [];

  beforeAll(async () => {
    dockerd = await startDockerd();
    work = await mkdtemp(join(tmpdir(), 'cairn-dockerd-work-'));

    // The base image, offline: busybox-static plus a file carrying a capability and a user xattr.
    const rootfs = join(work, 'rootfs');
    for (const d of ['bin', 'etc', 'tmp']) await mkdir(join(rootfs, d), { recursive: true });
    await chmod(join(rootfs, 'tmp'), 0o1777);
    await copyFile(BUSYBOX, join(rootfs, 'bin/busybox'));
    for (const a of APPLETS) await symlink('busybox', join(rootfs, 'bin', a));
    await writeFile(join(rootfs, 'bin/capfile'), 'capability holder\n');
    sys.lsetxattrSync(join(rootfs, 'bin/capfile'), 'security.capability', CAPABILITY);
    sys.lsetxattrSync(join(rootfs, 'bin/capfile'), 'user.note', Buffer.from('kept on disk'));
    await gnuTar(['-C', rootfs, '-cf', join(work, 'base.tar'), '.']);
    await dockerd.docker(['import', join(work, 'base.tar'), 'cairn-base:1']);

    const ctx = join(work, 'ctx');
    await mkdir(ctx);
    await writeFile(join(ctx, 'Dockerfile'), DOCKERFILE);
    await writeFile(join(ctx, 'copied'), 'from the build context\n');
    await dockerd.docker(['build', '--network', 'none', '-t', 'cairn-compat:1', ctx]);

    const graph = JSON.parse(await dockerd.docker(['image', 'inspect', 'cairn-compat:1', '--format', '{{json .GraphDriver.Data}}']));
    const idOf = (diffPath: string) => diffPath.slice(`${dockerd.dataRoot}/overlay2/`.length).split('/')[0]!;
    layers = [...(graph.LowerDir as string).split(':').reverse().map(idOf), idOf(graph.UpperDir)];
    imageId = (await dockerd.docker(['image', 'inspect', 'cairn-compat:1', '--format', '{{.Id}}'])).trim();

    const cid = (await dockerd.docker(['create', 'cairn-compat:1', '/bin/sh'])).trim();
    containerId = cid;
    const cgraph = JSON.parse(await dockerd.docker(['container', 'inspect', cid, '--format', '{{json .GraphDriver.Data}}']));
    containerLayer = idOf(cgraph.UpperDir);
    initLayer = `${containerLayer}-init`;
    await mkdir(join(work, 'export'));
    await gnuTar(['-C', join(work, 'export'), '-xpf', await dockerExport(dockerd, cid, join(work, 'export.tar'))]);
    exportTree = await snapshotTree(join(work, 'export'));

    saveTar = join(work, 'save.tar');
    await dockerd.docker(['save', '-o', saveTar, 'cairn-compat:1']);

    // A copy of the data root taken while no container runs (the one created never started).
    inPlace = await makeHome('cairn-dockerd-copy-');
    await rm(inPlace.root, { recursive: true });
    await run('cp', ['-a', dockerd.dataRoot, inPlace.root]);
    layoutBefore = await listLayout(inPlace.home);
    driver = await inPlace.open();
  }, 170_000);

  afterAll(async () => {
    for (const h of fresh) await h.dispose().catch(() => undefined);
    await inPlace?.dispose().catch(() => undefined);
    await dockerd?.stop();
    if (work) {
      await unmountUnder(work);
      await rm(work, { recursive: true, force: true });
    }
  }, 60_000);

  test('dockerd built five image layers; every image, init and container layer of the copy exists in cairn with Docker\'s parents', async () => {
    expect(layers).toHaveLength(1 + EXPECTED_CHANGES.length);
    for (const id of [...layers, initLayer, containerLayer]) expect(await driver.exists(id)).toBe(true);
    expect(await driver.parentOf(layers[0]!)).toBeNull();
    for (let i = 1; i < layers.length; i++) expect(await driver.parentOf(layers[i]!)).toBe(layers[i - 1]);
    expect(await driver.parentOf(initLayer)).toBe(layers[layers.length - 1]);
    expect(await driver.parentOf(containerLayer)).toBe(initLayer);
  });

  test('the top image layer mounted by cairn equals docker export of a container, apart from the init layer\'s paths', async () => {
    const top = layers[layers.length - 1]!;
    const mounted = await driver.get(top);
    try {
      const tree = await snapshotTree(mounted);
      // Docker's layer store keeps every xattr the imported tar carried (layer 0 is that tar,
      // extracted); a RUN step is committed through Docker's tar writer, which keeps only
      // security.capability, so the copy-up in layer 3 lost user.note on the way.
      const baseFile = join(inPlace.home, layers[0]!, 'diff/bin/capfile');
      expect(sys.lgetxattrSync(baseFile, 'user.note')?.toString()).toBe('kept on disk');
      expect(tree.get('/bin/capfile')).toMatchObject({ mode: '0750', xattrs: { 'security.capability': CAPABILITY.toString('hex') } });
      expect(tree.get('/data/keep/a')).toMatchObject({ mode: '4755', uid: 1000, gid: 2000, linkGroup: '/data/keep/a' });
      expect(tree.get('/data/keep/hard')?.linkGroup).toBe('/data/keep/a');
      expect(tree.get('/data/replace/sub')).toBeUndefined();
      expect(tree.has('/bin/touch')).toBe(false);

      const initPaths = [...(await snapshotTree(join(inPlace.home, initLayer, 'diff'))).keys()].filter((p) => p !== '/');
      expect(initPaths).toEqual(expect.arrayContaining(['/.dockerenv', '/etc/hosts', '/etc/resolv.conf']));
      expectSameTree(asDockerTar(tree), exportTree, { ignorePaths: initPaths });
    } finally {
      await driver.put(top);
    }
  });

  test('the container layer mounted by cairn (init layer and image below it) equals the whole docker export', async () => {
    const mounted = await driver.get(containerLayer);
    try {
      expectSameTree(asDockerTar(await snapshotTree(mounted)), exportTree);
    } finally {
      await driver.put(containerLayer);
    }
  });

  test('changes of each Docker layer against its parent are exactly what its Dockerfile step did', async () => {
    const actual: Change[][] = [];
    for (let i = 1; i < layers.length; i++) actual.push(sortChanges(await driver.changes(layers[i]!, layers[i - 1]!)));
    expect(actual).toEqual(EXPECTED_CHANGES);
  });

  test('the diff of each Docker layer, applied in order into a fresh cairn store, reproduces every layer\'s tree exactly', async () => {
    const home = await makeHome('cairn-dockerd-apply-');
    fresh.push(home);
    const target = await home.open();
    let parent: string | null = null;
    for (const [i, id] of layers.entries()) {
      const copyId = `copy${i}`;
      await target.create(copyId, parent);
      await target.applyDiff(copyId, parent, await driver.diff(id, i === 0 ? null : layers[i - 1]!));
      const [a, b] = [await driver.get(id), await target.get(copyId)];
      try {
        expectSameTree(await snapshotTree(b), await snapshotTree(a));
      } finally {
        await driver.put(id);
        await target.put(copyId);
      }
      parent = copyId;
    }
  });

  test('docker save re-imported through @cairnfs/image gives the same layers, each tree identical to Docker\'s in place', async () => {
    const home = await makeHome('cairn-dockerd-save-');
    fresh.push(home);
    const target = await home.open();
    const store = await LayerStore.open(target);
    const [img] = await store.importImage(saveTar);
    reimported = store;
    expect(img!.id).toBe(imageId);
    expect(img!.layers).toHaveLength(layers.length);
    for (const [i, chainId] of img!.layers.entries()) {
      const cacheId = store.layer(chainId).cacheId;
      const [a, b] = [await driver.get(layers[i]!), await target.get(cacheId)];
      try {
        // docker save rebuilds each layer's tar byte for byte (tar-split), so nothing of
        // the tree may differ: not the imported layer's nanoseconds and user xattrs either.
        expectSameTree(await snapshotTree(b), await snapshotTree(a));
      } finally {
        await driver.put(layers[i]!);
        await target.put(cacheId);
      }
    }
  });

  test('docker load of the image cairn exports from its re-imported layers gives Docker the same image id and tree', async () => {
    expect(reimported).toBeDefined();
    // Remove Docker's own copy first, or load would find the layers already there.
    await dockerd.docker(['rm', containerId]);
    await dockerd.docker(['rmi', 'cairn-compat:1']);
    await expect(dockerd.docker(['image', 'inspect', imageId])).rejects.toThrow(/No such image/);

    const tarball = join(work, 'cairn-export.tar');
    await pipeline(exportImage(reimported!, ['cairn-compat:1']), createWriteStream(tarball));
    expect(await dockerd.docker(['load', '-i', tarball])).toContain('cairn-compat:1');
    expect((await dockerd.docker(['image', 'inspect', 'cairn-compat:1', '--format', '{{.Id}}'])).trim()).toBe(imageId);

    const cid = (await dockerd.docker(['create', 'cairn-compat:1', '/bin/sh'])).trim();
    const cgraph = JSON.parse(await dockerd.docker(['container', 'inspect', cid, '--format', '{{json .GraphDriver.Data}}']));
    const initDiff = (cgraph.LowerDir as string).split(':')[0]!; // the nearest lower: <id>-init/diff
    expect(initDiff).toMatch(/-init\/diff$/);
    const initPaths = [...(await snapshotTree(initDiff)).keys()].filter((p) => p !== '/');
    const dir = join(work, 'export-after-load');
    await mkdir(dir);
    await gnuTar(['-C', dir, '-xpf', await dockerExport(dockerd, cid, join(work, 'export-after-load.tar'))]);
    const top = layers[layers.length - 1]!;
    const mounted = await driver.get(top);
    try {
      expectSameTree(asDockerTar(await snapshotTree(dir)), asDockerTar(await snapshotTree(mounted)), { ignorePaths: initPaths });
    } finally {
      await driver.put(top);
    }
  });

  test('after cairn used the copied store it keeps Docker\'s layout, and a second dockerd on that copy exports the same image tree', async () => {
    await driver.cleanup();
    const after = await listLayout(inPlace.home);
    // cairn's store lock and its state dir (layer locks, mount holds) are its only
    // additions (dot names, which no layer id can have).
    expect(Object.keys(after).filter((k) => !(k in layoutBefore))).toEqual(['.cairn', '.cairn-lock']);
    delete after['.cairn'];
    delete after['.cairn-lock'];
    expect(after).toEqual(layoutBefore);

    const second = await startDockerd({ dataRoot: inPlace.root });
    try {
      expect((await second.docker(['image', 'inspect', 'cairn-compat:1', '--format', '{{.Id}}'])).trim()).toBe(imageId);
      const cid = (await second.docker(['create', 'cairn-compat:1', '/bin/sh'])).trim();
      const cgraph = JSON.parse(await second.docker(['container', 'inspect', cid, '--format', '{{json .GraphDriver.Data}}']));
      const initPaths = [...(await snapshotTree((cgraph.LowerDir as string).split(':')[0]!)).keys()].filter((p) => p !== '/');
      const dir = join(work, 'export-second');
      await mkdir(dir);
      await gnuTar(['-C', dir, '-xpf', await dockerExport(second, cid, join(work, 'export-second.tar'))]);
      expectSameTree(asDockerTar(await snapshotTree(dir)), exportTree, { ignorePaths: initPaths });
    } finally {
      await second.stop();
    }
  });
});
