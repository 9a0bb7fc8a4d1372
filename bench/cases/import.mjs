// Image import: cairn's LayerStore.importImage into a fresh overlay2 store vs `docker load
// -i` of the same docker-save tarball into a private dockerd (Debian's 20.10, started once
// for the case), and vs the naive reference `tar -xzf` of each layer into empty dirs, one
// after the other. All three write to the same tmpfs. The three sides alternate (cairn,
// docker, tar, cairn, …) so drift hits them alike.
//
// docker load does its work in dockerd (it untars the archive into its data root, then
// applies each layer in a re-exec'd child), so the docker side's CPU is dockerd's and its
// children's (utime+stime+cutime+cstime from /proc/<pid>/stat), plus containerd's, plus
// the client's.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { cpuMs, summarize } from '../harness.mjs';
import { rmrf, runReference } from '../env.mjs';
import { cached } from '../inputs.mjs';

const TAG = 'cairn-bench/import:latest';

function prng(seed) {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 0x100000000;
  };
}

/**
 * Content that compresses like a distro's does (~3× with gzip): mostly text made of
 * words from a small vocabulary (configs, scripts, docs), some machine-code-like bytes
 * (skewed byte distribution, short repeats) for binaries and libraries.
 */
function corpus(rand, bytes) {
  const words = Array.from({ length: 2000 }, () => {
    const n = 2 + Math.floor(rand() * 9);
    let w = '';
    for (let i = 0; i < n; i++) w += String.fromCharCode(97 + Math.floor(Math.pow(rand(), 1.5) * 26));
    return w;
  });
  const text = Buffer.alloc(bytes >> 1);
  for (let off = 0; off < text.length;) {
    const w = words[Math.floor(Math.pow(rand(), 2) * words.length)];
    off += text.write(w + (rand() < 0.1 ? '\n' : rand() < 0.05 ? '=' : ' '), off);
  }
  const bin = Buffer.alloc(bytes - text.length);
  for (let i = 0; i < bin.length; i++) {
    bin[i] = rand() < 0.3 ? 0 : Math.floor(Math.pow(rand(), 3) * 256);
    if (i > 16 && rand() < 0.2) { const back = 1 + Math.floor(rand() * 16); bin[i] = bin[i - back]; }
  }
  return { text, bin };
}

/**
 * One layer's tree: `files` files of about `bytes` in total (heavy-tailed sizes: most
 * small, a few carry most bytes) in shared distro-like directories; an upper layer also
 * replaces some of the base's files and deletes others (whiteouts), as package upgrades do.
 */
async function makeLayerTree(dir, { layer, files, bytes, seed, base }) {
  const rand = prng(seed * 7919 + layer);
  const { text, bin } = corpus(rand, 4 << 20);
  const dirs = [];
  const top = ['usr/bin', 'usr/lib', 'usr/share/doc', 'usr/share/locale', 'etc', 'var/lib', 'opt/app'];
  for (let i = 0; i < Math.max(4, Math.floor(files / 30)); i++) {
    dirs.push(`${top[i % top.length]}/p${layer}-${i}${rand() < 0.3 ? `/sub${i % 7}` : ''}`);
  }
  for (const d of dirs) await mkdir(join(dir, d), { recursive: true });
  const weights = Array.from({ length: files }, () => Math.pow(rand(), 6));
  const sum = weights.reduce((a, b) => a + b, 0);
  const names = [];
  for (let i = 0; i < files; i++) {
    const size = Math.floor((weights[i] / sum) * bytes);
    const src = i % 3 === 0 ? bin : text;
    const off = Math.floor(rand() * Math.max(1, src.length - Math.min(size, src.length)));
    const body = size <= src.length ? src.subarray(off, off + size) : Buffer.concat(Array(Math.ceil(size / src.length)).fill(src)).subarray(0, size);
    const name = `${dirs[i % dirs.length]}/f${i}${i % 3 === 0 ? '.so' : '.txt'}`;
    await writeFile(join(dir, name), body);
    names.push(name);
  }
  if (base) {
    // Package upgrades: some of the base layer's files replaced, some deleted.
    for (let i = 0; i < Math.min(200, base.length / 10); i++) {
      const victim = base[Math.floor(rand() * base.length)];
      await mkdir(join(dir, victim, '..'), { recursive: true });
      if (rand() < 0.5) await writeFile(join(dir, victim), text.subarray(i * 100, i * 100 + 2000));
      else if (!existsSync(join(dir, victim))) {
        const slash = victim.lastIndexOf('/');
        await writeFile(join(dir, `${victim.slice(0, slash)}/.wh.${victim.slice(slash + 1)}`), '');
      }
    }
  }
  for (let i = 0; i < 20; i++) execFileSync('ln', ['-sf', names[i * 7 % names.length].split('/').pop(), join(dir, `${names[i * 7 % names.length]}.link${i}`)]);
  return names;
}

const sha256File = (file) => createHash('sha256').update(readFileSync(file)).digest('hex');
const TAR_DETERMINISTIC = ['--sort=name', '--mtime=@1700000000', '--owner=0', '--group=0', '--numeric-owner'];

/**
 * A 5-layer image as two docker-save tarballs (layers uncompressed as `docker save` writes
 * them, and gzip-compressed as registries serve them), kept in the bench cache. Returns
 * { plain, gzip, layers: [{ tar, gz }], files, bytes, imageId }.
 */
export function cachedImage(params) {
  return cached(`image-${params.files}-${params.totalBytes}-${params.seed ?? 42}`, (root) => buildImage(root, params));
}

async function buildImage(root, params) {
  // Base layer half of everything, then smaller and smaller upper layers.
  const shares = [0.5, 0.25, 0.125, 0.075, 0.05];
  const layers = [];
  const diffIds = [];
  let base = null;
  let files = 0;
  let bytes = 0;
  for (const [i, share] of shares.entries()) {
    const tree = join(root, `tree${i}`);
    const nFiles = Math.round(params.files * share);
    const names = await makeLayerTree(tree, { layer: i, files: nFiles, bytes: params.totalBytes * share, seed: params.seed ?? 42, base });
    base ??= names;
    const tar = join(root, `layer${i}.tar`);
    execFileSync('tar', ['--format=pax', ...TAR_DETERMINISTIC, '-C', tree, '-cf', tar, '.']);
    execFileSync('sh', ['-c', 'gzip -n -6 -c "$1" > "$1.gz"', 'sh', tar]);
    rmSync(tree, { recursive: true, force: true });
    files += nFiles;
    bytes += readFileSync(tar).length;
    diffIds.push(`sha256:${sha256File(tar)}`);
    layers.push({ tar, gz: `${tar}.gz` });
  }
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', created: '2023-11-14T22:13:20Z',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: shares.map((_, i) => ({ created: '2023-11-14T22:13:20Z', created_by: `cairn bench layer ${i}` })),
  }));
  const imageId = `sha256:${createHash('sha256').update(config).digest('hex')}`;
  const archives = {};
  for (const kind of ['plain', 'gzip']) {
    const stage = join(root, `stage-${kind}`);
    mkdirSync(stage);
    const paths = layers.map((l, i) => {
      const p = `layer${i}/layer.tar${kind === 'gzip' ? '.gz' : ''}`;
      mkdirSync(join(stage, `layer${i}`));
      execFileSync('ln', [kind === 'gzip' ? l.gz : l.tar, join(stage, p)]);
      return p;
    });
    writeFileSync(join(stage, `${imageId.slice(7)}.json`), config);
    writeFileSync(join(stage, 'manifest.json'), JSON.stringify([{ Config: `${imageId.slice(7)}.json`, RepoTags: [TAG], Layers: paths }]));
    archives[kind] = join(root, `image-${kind}.tar`);
    execFileSync('tar', ['--format=ustar', ...TAR_DETERMINISTIC, '-C', stage, '-cf', archives[kind], 'manifest.json', `${imageId.slice(7)}.json`, ...layers.map((_, i) => `layer${i}`)]);
    rmSync(stage, { recursive: true, force: true });
  }
  return { ...archives, layers, files, bytes, imageId };
}

/**
 * The same image with zstd layers (`zstd -3`, the level `docker push --compression zstd`
 * and containerd default to), as a docker-save tarball beside the others; cached on its own
 * so the plain and gzip archives already made are kept. Adds { zstd, layers[i].zst }.
 */
export async function withZstd(image, params) {
  const made = await cached(`image-zstd-${params.files}-${params.totalBytes}-${params.seed ?? 42}`, (root) => {
    const stage = join(root, 'stage');
    mkdirSync(stage);
    // The plain archive's manifest and config, with the layer paths renamed.
    const config = `${image.imageId.slice(7)}.json`;
    execFileSync('tar', ['-xf', image.plain, '-C', stage, 'manifest.json', config]);
    const zst = image.layers.map((l, i) => {
      const out = join(root, `layer${i}.tar.zst`);
      execFileSync('zstd', ['-q', '-3', '-f', l.tar, '-o', out]);
      mkdirSync(join(stage, `layer${i}`));
      execFileSync('ln', [out, join(stage, `layer${i}/layer.tar.zst`)]);
      return out;
    });
    const manifest = JSON.parse(readFileSync(join(stage, 'manifest.json'), 'utf8'));
    manifest[0].Layers = image.layers.map((_, i) => `layer${i}/layer.tar.zst`);
    writeFileSync(join(stage, 'manifest.json'), JSON.stringify(manifest));
    const archive = join(root, 'image-zstd.tar');
    execFileSync('tar', ['--format=ustar', ...TAR_DETERMINISTIC, '-C', stage, '-cf', archive, 'manifest.json', config, ...image.layers.map((_, i) => `layer${i}`)]);
    rmSync(stage, { recursive: true, force: true });
    return { zstd: archive, zst };
  });
  return { ...image, zstd: made.zstd, layers: image.layers.map((l, i) => ({ ...l, zst: made.zst[i] })) };
}

/** What `tar` is given for one layer of each kind. */
const TAR_READS = {
  plain: { flags: '-xf', file: (l) => l.tar, name: 'tar -xf ×5' },
  gzip: { flags: '-xzf', file: (l) => l.gz, name: 'tar -xzf ×5' },
  zstd: { flags: '--zstd -xf', file: (l) => l.zst, name: 'tar --zstd -xf ×5' },
};

/**
 * CPU ms of a process and all its live descendants (dockerd → containerd → shims), each
 * with its reaped children: dockerd re-executes itself to untar the archive and to apply
 * each layer (chrootarchive), and those children are gone but counted in cutime/cstime.
 */
export function treeCpuMs(pid) {
  let total = 0;
  const queue = [pid];
  while (queue.length) {
    const p = queue.shift();
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 10; // utime stime cutime cstime, 10 ms ticks
      for (const task of readdirSync(`/proc/${p}/task`)) {
        queue.push(...readFileSync(`/proc/${p}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
      }
    } catch { /* exited meanwhile */ }
  }
  return total;
}

/** What is left of images and layers in a dockerd data root: should be nothing between loads. */
export function dockerLeftovers(dataRoot) {
  const left = [];
  const ls = (p) => (existsSync(p) ? readdirSync(p) : []);
  for (const l of ls(join(dataRoot, 'image/overlay2/layerdb/sha256'))) left.push(`layerdb/${l}`);
  for (const l of ls(join(dataRoot, 'image/overlay2/imagedb/content/sha256'))) left.push(`imagedb/${l}`);
  for (const l of ls(join(dataRoot, 'overlay2'))) if (l !== 'l') left.push(`overlay2/${l}`);
  for (const l of ls(join(dataRoot, 'overlay2/l'))) left.push(`overlay2/l/${l}`);
  return left;
}

/**
 * Runs the import comparison for each archive kind (gzip layers, then plain layers as
 * `docker save` writes them) with every side writing under `base` (`where` names it).
 * `image` is @cairnfs/image, `testkit` testkit's dockerd module. Progress lines go to stderr.
 */
export async function importCases({ params, base, where, pairs, cairn, image: imagePkg, testkit, kinds = ['gzip', 'plain', 'zstd'], withDocker = true, deferRemovals = false }) {
  const results = [];
  const image = kinds.includes('zstd') ? await withZstd(await cachedImage(params), params) : await cachedImage(params);
  const label = `5 layers, ${(image.bytes / 2 ** 20).toFixed(0)} MiB, ${image.files} files, ${where}`;
  const log = (line) => process.stderr.write(`${line}\n`);
  mkdirSync(base, { recursive: true });
  // With deferRemovals, every side's trees stay until the case ends: on ext4, creating files
  // within 30 s of removing thousands makes the inode allocator skip recently freed inodes
  // one buffer-cache lookup at a time (`recently_deleted()`), which took 75 % of an import's
  // CPU after the previous round's removal (docs/benchmarks.md) and measures the bench's
  // order, not the import.
  const removeLater = [];
  const remove = (p) => (deferRemovals ? removeLater.push(p) : rmrf(p));
  let dockerd = null;
  let dockerSkip = testkit.dockerdMissing();
  if (withDocker && !dockerSkip) {
    try {
      dockerd = await testkit.startDockerd({ baseDir: base });
    } catch (err) {
      dockerSkip = `cannot start a private dockerd: ${err.message.split('\n')[0]}`;
    }
  }
  try {
    for (const kind of kinds) {
      const archive = image[kind];
      const sides = { cairn: { wall: [], cpu: [] }, docker: { wall: [], cpu: [] }, tar: { wall: [], cpu: [] } };
      const dockerCpu = () => (dockerd ? treeCpuMs(dockerd.pid) : 0);
      // docker load is compared on what docker save writes (plain) and registries mostly
      // serve (gzip), where the case runs it at all (withDocker).
      const dockerSide = withDocker && kind !== 'zstd';
      for (let i = -1; i < pairs; i++) {
        // cairn: a fresh overlay2 store each round, opened untimed (dockerd is running too).
        {
          const root = join(base, `cairn-${kind}-${i + 1}`);
          const driver = await cairn.openDriver({ root, driver: 'overlay2' });
          const store = await imagePkg.LayerStore.open(driver);
          const c0 = cpuMs();
          const t0 = performance.now();
          const [img] = await store.importImage(archive);
          const wall = performance.now() - t0;
          const cpu = cpuMs() - c0;
          if (img.id !== image.imageId || img.layers.length !== 5) throw new Error(`cairn imported ${img.id} with ${img.layers.length} layers, expected ${image.imageId} with 5`);
          if (i >= 0) { sides.cairn.wall.push(wall); sides.cairn.cpu.push(cpu); }
          await store.close();
          await driver.cleanup();
          remove(root);
        }
        if (dockerSide && dockerd) {
          const left = dockerLeftovers(dockerd.dataRoot);
          if (left.length) throw new Error(`dockerd's store is not empty before docker load (${left.slice(0, 3).join(', ')}…)`);
          const d0 = dockerCpu();
          const c0 = cpuMs();
          const t0 = performance.now();
          const { cpuMs: cli } = await runReference('/usr/bin/docker', ['--host', dockerd.host, 'load', '-q', '-i', archive], { ...process.env, DOCKER_CONFIG: join(dockerd.dir, 'client') });
          const wall = performance.now() - t0;
          const cpu = cpuMs() - c0 + cli + dockerCpu() - d0;
          if (i >= 0) { sides.docker.wall.push(wall); sides.docker.cpu.push(cpu); }
          const id = (await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', TAG])).trim();
          if (id !== image.imageId) throw new Error(`docker load made image ${id}, expected ${image.imageId}`);
          await dockerd.docker(['rmi', '-f', TAG]);
          const after = dockerLeftovers(dockerd.dataRoot);
          if (after.length) throw new Error(`docker rmi left layers behind (${after.slice(0, 3).join(', ')}…): the next load would not do the full work`);
        }
        {
          const dirs = image.layers.map((_, l) => join(base, `tar-${kind}-${i + 1}-${l}`));
          for (const d of dirs) mkdirSync(d);
          const c0 = cpuMs();
          const t0 = performance.now();
          let tarCpu = 0;
          const how = TAR_READS[kind];
          for (const [l, layer] of image.layers.entries()) tarCpu += (await runReference('tar', [...how.flags.split(' '), how.file(layer), '-C', dirs[l]])).cpuMs;
          const wall = performance.now() - t0;
          const cpu = cpuMs() - c0 + tarCpu;
          if (i >= 0) { sides.tar.wall.push(wall); sides.tar.cpu.push(cpu); }
          for (const d of dirs) remove(d);
        }
        if (i >= 0) log(`  import ${kind} pair ${i + 1}/${pairs}: cairn ${sides.cairn.wall.at(-1).toFixed(0)} ms${dockerSide && dockerd ? `, docker load ${sides.docker.wall.at(-1).toFixed(0)} ms` : ''}, tar ${sides.tar.wall.at(-1).toFixed(0)} ms`);
      }
      const name = `import ${label}, ${kind} layers`;
      if (dockerSide) {
        results.push(dockerd
          ? summarize(`${name}: importImage`, 'docker load', sides.cairn.wall, sides.docker.wall, sides.cairn.cpu, sides.docker.cpu, pairs)
          : { name: `${name}: importImage vs docker load`, skipped: dockerSkip });
      }
      results.push(summarize(`${name}: importImage`, TAR_READS[kind].name, sides.cairn.wall, sides.tar.wall, sides.cairn.cpu, sides.tar.cpu, pairs));
    }
  } finally {
    if (dockerd) await dockerd.stop();
    for (const p of removeLater) rmrf(p);
  }
  return results;
}
