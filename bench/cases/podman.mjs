// podman's way to an id-mapped container, for issue 18's comparison: a rootless
// `podman create --uidmap …` + `podman mount` on the bench image, with podman's overlay
// driver in the kernel (no mount_program, so no fuse-overlayfs id shifting): without
// id-mapped mounts (a rootless caller cannot id-map the host's disk) containers/storage
// makes a copy of the image with every owner shifted, once per map. Each timed round uses a
// map not seen before, as the chown-copy case does, so each round pays the copy.
//
// Against it, in the same run and alternating: cairn's id-mapped create+get+put on the
// same image (as root, in this process), and podman's own create + mount without a map
// (podman's fixed cost: two processes that each join the rootless namespace).
//
// podman runs as the testkit's rootless user (subuid ranges), with its storage
// (graphroot, runroot), its config and XDG_RUNTIME_DIR in a throw-away dir; the image goes
// in with `podman load` of the bench's docker-archive (no network). Both podman commands
// run inside one `podman unshare sh`, which times them (date) and reads their CPU (`times`,
// the shell's reaped children); `podman unshare` itself is outside the timing. At the end podman's pause process (it keeps the rootless
// namespace alive) is killed by the pid it wrote, and the dir removed.
import { spawnSync } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { cpuMs, summarize } from '../harness.mjs';
import { cachedImage } from './import.mjs';

const shift = (base) => ({ uidMap: [{ containerId: 0, hostId: base, size: 65536 }], gidMap: [{ containerId: 0, hostId: base, size: 65536 }] });
/** Width of each round's map inside the user's namespace (its 65,536 subordinate ids give 64 maps). */
const MAP_SIZE = 1024;

function podmanMissing(testkit) {
  if (spawnSync('sh', ['-c', 'command -v podman']).status !== 0) return 'podman is not installed; run scripts/install-deps.sh (Debian podman)';
  return testkit.rootlessMissingReason();
}

/** Sums `NmS.SSs` pairs of the second line of sh's `times` (the children's user and system time), in ms. */
function childCpuMs(timesOutput) {
  const line = timesOutput.trim().split('\n')[1] ?? '';
  let ms = 0;
  for (const m of line.matchAll(/(\d+)m([\d.]+)s/g)) ms += (Number(m[1]) * 60 + Number(m[2])) * 1000;
  return ms;
}

/** A podman session of the rootless user on a private storage. */
async function podmanSession(testkit) {
  const user = testkit.ensureRootlessUser();
  const dir = mkdtempSync('/var/tmp/cairn-bench-podman-');
  for (const sub of ['', 'xdg', 'home', 'graph', 'run']) {
    mkdirSync(join(dir, sub), { recursive: true, mode: 0o700 });
    chownSync(join(dir, sub), user.uid, user.gid);
  }
  // No systemd here: events to a file, cgroups through cgroupfs (create and mount use neither much).
  writeFileSync(join(dir, 'containers.conf'), '[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n');
  const env = {
    CONTAINERS_CONF: join(dir, 'containers.conf'), XDG_RUNTIME_DIR: join(dir, 'xdg'), HOME: join(dir, 'home'),
    // Every podman command takes the storage as flags: rootless podman 4.3 ignores graphroot
    // and runroot from a storage.conf (it reads rootless_storage_path only).
    P: `podman --root ${dir}/graph --runroot ${dir}/run --storage-driver overlay`,
  };
  const sh = async (script) => {
    const r = await testkit.runRootless(['sh', '-c', script], { unshare: false, env });
    if (r.code !== 0) throw new Error(`podman (as ${user.name}) failed: ${script}\n${r.stderr.trim()}`);
    return r.stdout;
  };
  return {
    dir,
    sh,
    /** Kills podman's pause process (ours: started by this session) and removes the storage. */
    close() {
      const pidFiles = ['xdg', 'run'].flatMap((sub) => {
        try { return readdirSync(join(dir, sub), { recursive: true }).filter((p) => String(p).endsWith('pause.pid')).map((p) => join(dir, sub, String(p))); } catch { return []; }
      });
      for (const pidFile of pidFiles) {
        try {
          const pid = Number(readFileSync(pidFile, 'utf8').trim());
          if (pid > 1) process.kill(pid, 'SIGKILL');
        } catch { /* no pause process */ }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function podmanIdmapCases({ base, pairs, cairn, image, imageParams, testkit, fileCounts }) {
  const missing = podmanMissing(testkit);
  if (missing) return [{ name: 'podman create --uidmap + mount', skipped: missing }];
  const results = [];
  for (const files of fileCounts) {
    const img = await cachedImage({ ...imageParams, files });
    const session = await podmanSession(testkit);
    const driver = await cairn.openDriver({ root: `${base}/podman-cairn-${files}`, driver: 'overlay2', options: {} });
    try {
      await session.sh(`$P load -q -i ${img.plain} >/dev/null`);
      const store = await image.LayerStore.open(driver);
      const [loaded] = await store.importImage(img.plain);
      const top = store.layer(loaded.layers[loaded.layers.length - 1]).cacheId;
      await store.close();
      const ref = img.imageId.slice('sha256:'.length);
      let map = 0;
      let n = 0;
      const podman = async (mapped) => {
        const uidmap = mapped ? `--uidmap 0:${1 + MAP_SIZE * map}:${MAP_SIZE} --gidmap 0:${1 + MAP_SIZE * map++}:${MAP_SIZE} ` : '';
        const name = `b${n++}`;
        const out = await session.sh(`$P unshare sh -c '
          t0=$(date +%s%N)
          $P create -q --pull never --name ${name} ${uidmap}${ref} true >/dev/null
          $P mount ${name} >/dev/null
          t1=$(date +%s%N)
          echo $(( (t1 - t0) / 1000 ))
          times'`);
        const [us, ...rest] = out.trim().split('\n');
        return { ms: Number(us) / 1000, cpuMs: childCpuMs(rest.join('\n')) };
      };
      const sides = { cairn: [[], []], mapped: [[], []], plain: [[], []] };
      const rounds = Math.min(pairs, 3); // a chown copy of the image per round, as the chown-copy case
      for (let i = -1; i < rounds; i++) {
        const c0 = cpuMs();
        const t0 = performance.now();
        const id = `c${n++}`;
        await driver.createReadWrite(id, top);
        await driver.get(id, { idMappings: shift(100000) });
        await driver.put(id);
        const cairnRound = { ms: performance.now() - t0, cpuMs: cpuMs() - c0 };
        const mappedRound = await podman(true);
        const plainRound = await podman(false);
        if (i < 0) continue; // warm-up: page cache, podman's pause process and its first storage lock
        for (const [side, r] of [['cairn', cairnRound], ['mapped', mappedRound], ['plain', plainRound]]) {
          sides[side][0].push(r.ms);
          sides[side][1].push(r.cpuMs);
        }
      }
      const label = `${files} files`;
      results.push(summarize(`id-mapped create+get+put vs podman, ${label}`, 'podman create --uidmap + mount',
        sides.cairn[0], sides.mapped[0], sides.cairn[1], sides.mapped[1], rounds));
      results.push(summarize(`podman create --uidmap + mount, ${label}`, 'podman create + mount',
        sides.mapped[0], sides.plain[0], sides.mapped[1], sides.plain[1], rounds));
    } finally {
      await driver.cleanup();
      session.close();
    }
  }
  return results;
}
