// Registry pull: cairn's LayerStore.pull into a fresh overlay2 store vs `docker pull` by
// the private dockerd the import case uses (Debian's 20.10; 127.0.0.0/8 registries are
// plain HTTP for it by default) and vs the naive reference `skopeo copy` to a directory
// followed by `tar -xzf` of each layer. The image is the import case's generated 5-layer
// image, pushed once by skopeo into a private registry (distribution 2.8) on 127.0.0.1.
// The sides alternate (cairn, docker, skopeo+tar, cairn, …). Then a second pull of the same
// image into the same store (nothing to download) vs `skopeo inspect --raw` (one manifest GET).
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { cpuMs, summarize } from '../harness.mjs';
import { rmrf, run } from '../env.mjs';
import { cachedImage, dockerLeftovers, treeCpuMs } from './import.mjs';

const REPO = 'bench/pull:1';

export async function pullCases({ params, base, where, pairs, cairn, image: imagePkg, dockerKit, registryKit }) {
  const results = [];
  const missing = registryKit.registryMissing();
  if (missing) return [{ name: `pull (${where})`, skipped: missing }];
  const image = await cachedImage(params);
  const label = `pull 5 layers, ${(image.bytes / 2 ** 20).toFixed(0)} MiB, ${image.files} files, ${where}`;
  const log = (line) => process.stderr.write(`${line}\n`);
  mkdirSync(base, { recursive: true });
  const reg = await registryKit.startRegistry();
  let dockerd = null;
  let dockerSkip = dockerKit.dockerdMissing();
  try {
    // skopeo compresses the plain layers with gzip as it pushes (once per run).
    await registryKit.skopeo(['copy', '-q', '--dest-tls-verify=false', `docker-archive:${image.plain}`, `docker://${reg.host}/${REPO}`]);
    const ref = `${reg.host}/${REPO}`;
    if (!dockerSkip) {
      try { dockerd = await dockerKit.startDockerd({ baseDir: base }); } catch (err) { dockerSkip = `cannot start a private dockerd: ${err.message.split('\n')[0]}`; }
    }
    const sides = { cairn: { wall: [], cpu: [] }, docker: { wall: [], cpu: [] }, naive: { wall: [], cpu: [] } };
    const again = { cairn: [], skopeo: [], cairnCpu: [], skopeoCpu: [] };
    // Trees are deleted after the last round, not between rounds: on ext4 without a journal
    // (this repository's disk) the inode allocator skips inodes deleted in the last minute
    // by reading their inode table blocks, which charged 20,000 fresh deletions to whichever
    // side ran next (perf: find_get_block_common, recently_deleted).
    const done = [];
    for (let i = -1; i < pairs; i++) {
      {
        const root = join(base, `cairn-pull-${i + 1}`);
        const driver = await cairn.openDriver({ root, driver: 'overlay2' });
        const store = await imagePkg.LayerStore.open(driver);
        const c0 = cpuMs();
        const t0 = performance.now();
        const img = await store.pull(ref, { insecure: true });
        const wall = performance.now() - t0;
        const cpu = cpuMs() - c0;
        if (img.id !== image.imageId || img.layers.length !== 5) throw new Error(`cairn pulled ${img.id} with ${img.layers.length} layers, expected ${image.imageId} with 5`);
        if (i >= 0) { sides.cairn.wall.push(wall); sides.cairn.cpu.push(cpu); }
        // the same image again: only the manifest is fetched
        const a0 = cpuMs();
        const s0 = performance.now();
        await store.pull(ref, { insecure: true });
        if (i >= 0) { again.cairn.push(performance.now() - s0); again.cairnCpu.push(cpuMs() - a0); }
        await store.close();
        await driver.cleanup();
        done.push(root);
        const b0 = cpuMs();
        const r0 = performance.now();
        run('skopeo', ['--insecure-policy', 'inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
        if (i >= 0) { again.skopeo.push(performance.now() - r0); again.skopeoCpu.push(cpuMs() - b0); }
      }
      if (dockerd) {
        const left = dockerLeftovers(dockerd.dataRoot);
        if (left.length) throw new Error(`dockerd's store is not empty before docker pull (${left.slice(0, 3).join(', ')}…)`);
        const d0 = treeCpuMs(dockerd.pid);
        const c0 = cpuMs();
        const t0 = performance.now();
        run('/usr/bin/docker', ['--host', dockerd.host, 'pull', '-q', ref], { env: { ...process.env, DOCKER_CONFIG: join(dockerd.dir, 'client') } });
        const wall = performance.now() - t0;
        const cpu = cpuMs() - c0 + treeCpuMs(dockerd.pid) - d0;
        if (i >= 0) { sides.docker.wall.push(wall); sides.docker.cpu.push(cpu); }
        const id = (await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', ref])).trim();
        if (id !== image.imageId) throw new Error(`docker pull made image ${id}, expected ${image.imageId}`);
        await dockerd.docker(['rmi', '-f', ref]);
        const after = dockerLeftovers(dockerd.dataRoot);
        if (after.length) throw new Error(`docker rmi left layers behind (${after.slice(0, 3).join(', ')}…)`);
      }
      {
        const dir = join(base, `skopeo-${i + 1}`);
        const c0 = cpuMs();
        const t0 = performance.now();
        run('skopeo', ['--insecure-policy', 'copy', '-q', '--src-tls-verify=false', `docker://${ref}`, `dir:${dir}`]);
        const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
        for (const [l, layer] of manifest.layers.entries()) {
          const into = join(base, `skopeo-${i + 1}-l${l}`);
          mkdirSync(into);
          run('tar', ['-xzf', join(dir, layer.digest.slice(7)), '-C', into]);
        }
        const wall = performance.now() - t0;
        const cpu = cpuMs() - c0;
        if (i >= 0) { sides.naive.wall.push(wall); sides.naive.cpu.push(cpu); }
        for (const d of readdirSync(base).filter((n) => n.startsWith(`skopeo-${i + 1}`))) done.push(join(base, d));
      }
      if (i >= 0) log(`  pull pair ${i + 1}/${pairs}: cairn ${sides.cairn.wall.at(-1).toFixed(0)} ms${dockerd ? `, docker pull ${sides.docker.wall.at(-1).toFixed(0)} ms` : ''}, skopeo+tar ${sides.naive.wall.at(-1).toFixed(0)} ms, second pull ${again.cairn.at(-1).toFixed(0)} ms`);
    }
    if (dockerd) results.push(summarize(`${label}: pull`, 'docker pull', sides.cairn.wall, sides.docker.wall, sides.cairn.cpu, sides.docker.cpu, pairs));
    else results.push({ name: `${label}: pull vs docker pull`, skipped: dockerSkip });
    results.push(summarize(`${label}: pull`, 'skopeo copy + tar -xzf ×5', sides.cairn.wall, sides.naive.wall, sides.cairn.cpu, sides.naive.cpu, pairs));
    results.push(summarize(`${label}: second pull`, 'skopeo inspect --raw', again.cairn, again.skopeo, again.cairnCpu, again.skopeoCpu, pairs));
    for (const d of done) rmrf(d);
  } finally {
    if (dockerd) await dockerd.stop();
    await reg.stop();
  }
  return results;
}
