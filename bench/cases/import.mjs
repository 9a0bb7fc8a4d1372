// Import: cairn's LayerStore.importImage of a docker-save tarball (5 gzip layers) into a
// fresh overlay2 store, against `docker load -i` of the same tarball into a private
// dockerd (Debian's 20.10, own data root on the same disk), and against `tar -xzf` of each
// layer into empty directories one after the other (what a naive importer does).
//
// docker load's work happens in dockerd (and containerd), not in the client, so the
// reference's CPU column is the CPU dockerd and its descendants used during the load
// (from /proc/<pid>/stat), plus the client's.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { comparePair, median } from '../harness.mjs';
import { makeTree, tarTree } from '../inputs.mjs';
import { rmrf, run } from '../env.mjs';

const LAYERS = 5;

/**
 * A docker-save tarball of a 5-layer image, each layer a generated tree (distro-like
 * sizes, distinct seeds) packed by GNU tar and gzip-compressed, cached like the other
 * inputs. Returns { tarball, layerGz: [paths], bytes (uncompressed), files }.
 */
export async function cachedImage({ files, totalBytes }) {
  const cache = process.env.CAIRN_BENCH_CACHE ?? '/var/tmp/cairn-bench-inputs';
  const root = join(cache, `image-${LAYERS}x-${files}-${totalBytes}`);
  const done = join(root, 'done.json');
  if (existsSync(done)) return JSON.parse(readFileSync(done, 'utf8'));
  rmSync(root, { recursive: true, force: true });
  const save = join(root, 'save');
  mkdirSync(save, { recursive: true });
  const diffIds = [];
  const layerPaths = [];
  const layerGz = [];
  let bytes = 0;
  for (let i = 0; i < LAYERS; i++) {
    const tree = await makeTree(join(root, `tree${i}`), { files: Math.floor(files / LAYERS), totalBytes: Math.floor(totalBytes / LAYERS), seed: 1000 + i });
    const tar = tarTree(tree.dir, join(root, `layer${i}.tar`));
    const raw = readFileSync(tar);
    diffIds.push(`sha256:${createHash('sha256').update(raw).digest('hex')}`);
    bytes += raw.length;
    const rel = `layer${i}/layer.tar`;
    mkdirSync(join(save, `layer${i}`));
    // docker save writes uncompressed layer.tar files; docker load (and cairn) also take
    // compressed ones, which is what a registry pull hands a runtime.
    writeFileSync(join(save, rel), execFileSync('gzip', ['-6', '-c', tar], { maxBuffer: 1 << 30 }));
    layerPaths.push(rel);
    layerGz.push(join(save, rel));
    rmSync(tree.dir, { recursive: true, force: true });
    rmSync(tar);
  }
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map((_, i) => ({ created: '2026-01-01T00:00:00Z', created_by: `layer ${i}` })),
  }));
  const configName = `${createHash('sha256').update(config).digest('hex')}.json`;
  writeFileSync(join(save, configName), config);
  writeFileSync(join(save, 'manifest.json'), JSON.stringify([{ Config: configName, RepoTags: ['cairn-bench:import'], Layers: layerPaths }]));
  const tarball = join(root, 'image.tar');
  execFileSync('tar', ['-cf', tarball, '-C', save, '.']);
  const result = { tarball, layerGz, bytes, files, compressedBytes: readFileSync(tarball).length };
  writeFileSync(done, JSON.stringify(result));
  return result;
}

/** CPU ms (user+sys) of a process and all its descendants, from /proc. */
function treeCpuMs(pid) {
  const hz = 100;
  let total = 0;
  const queue = [pid];
  while (queue.length) {
    const p = queue.shift();
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime, stime, and cutime, cstime: dockerd re-executes itself to untar each layer
      // (chrootarchive), and those children are reaped, not alive in the tree.
      total += (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * (1000 / hz);
    } catch { continue; }
    for (const task of safeReaddir(`/proc/${p}/task`)) {
      for (const child of readFileSync(`/proc/${p}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) queue.push(Number(child));
    }
  }
  return total;
}

function safeReaddir(dir) {
  try { return readdirSync(dir); } catch { return []; }
}

export async function importCases({ params, base, where, pairs, cairn, image, testkit }) {
  const results = [];
  const input = await cachedImage(params);
  const label = `${LAYERS} gzip layers, ${(input.bytes / 2 ** 20).toFixed(0)} MiB, ${input.files} files, ${where}`;
  mkdirSync(base, { recursive: true });

  const fresh = (name) => (side, i) => {
    const dir = join(base, `${name}-${side}-${i}`);
    mkdirSync(dir, { recursive: true });
    return { dir, teardown: () => rmrf(dir) };
  };

  const cairnImport = async (ctx) => {
    const driver = await cairn.openDriver({ root: ctx.dir, driver: 'overlay2' });
    try {
      const store = await image.LayerStore.open(driver);
      await store.importImage(input.tarball);
    } finally {
      await driver.cleanup();
    }
  };

  // vs tar -xzf of each layer, in order, into its own empty directory.
  results.push(await comparePair({
    name: `import ${label}: overlay2 importImage`, pairs, referenceName: 'tar -xzf ×5',
    setup: fresh('tar'),
    cairn: cairnImport,
    reference: (ctx) => {
      for (const [i, gz] of input.layerGz.entries()) {
        const out = join(ctx.dir, `l${i}`);
        mkdirSync(out);
        run('tar', ['-xzf', gz, '-C', out]);
      }
    },
  }));

  // vs docker load, when a private dockerd can run here.
  const missing = testkit.dockerdMissing();
  if (missing) {
    results.push({ name: `import ${label}: overlay2 importImage vs docker load`, skipped: missing });
    return results;
  }
  let dockerd;
  try {
    dockerd = await testkit.startDockerd({ baseDir: base });
  } catch (err) {
    results.push({ name: `import ${label}: overlay2 importImage vs docker load`, skipped: `dockerd did not start: ${err.message}` });
    return results;
  }
  try {
    const daemonCpu = [];
    const r = await comparePair({
      name: `import ${label}: overlay2 importImage`, pairs, referenceName: 'docker load',
      setup: fresh('dl'),
      cairn: cairnImport,
      reference: async () => {
        const c0 = treeCpuMs(dockerd.pid);
        await dockerd.docker(['load', '-i', input.tarball]);
        daemonCpu.push(treeCpuMs(dockerd.pid) - c0);
        // Remove the image and its layers, so the next load does the whole work again.
        await dockerd.docker(['rmi', '-f', 'cairn-bench:import']);
        const left = readdirSync(join(dockerd.dataRoot, 'overlay2')).filter((n) => n !== 'l');
        if (left.length) throw new Error(`docker rmi left ${left.length} layer dirs in ${dockerd.dataRoot}/overlay2`);
      },
    });
    // The first push is the warm-up pair's; comparePair keeps only the timed ones.
    const timed = daemonCpu.slice(daemonCpu.length - pairs);
    r.referenceCpuMs += median(timed);
    r.cpuRatio = r.cairnCpuMs / r.referenceCpuMs;
    r.note = 'reference CPU = docker client + dockerd/containerd tree';
    results.push(r);
  } finally {
    await dockerd.stop();
  }
  return results;
}
