#!/usr/bin/env node
// `npm run bench [-- --quick] [-- --json] [-- --only apply,export,...] [-- --pairs N] [-- --no-disk]`
// `npm run bench -- --check`: the regression guard run by .ci/run: the quick tmpfs cases of
// bench/bounds.json, judged against the bounds recorded there (bench/check.mjs).
//
// Runs cairn's hot operations against their reference tools on generated inputs (see
// bench/inputs.mjs; cached under /var/tmp/cairn-bench-inputs), alternating A B A B,
// and prints median, min–max and the ratio cairn/reference. Needs root (mounts) and a
// build (`npx tsc -b`): it benchmarks the compiled packages, as users run them.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { formatResult } from '../bench/harness.mjs';
import { judge, loadBounds } from '../bench/check.mjs';
import { cachedInput } from '../bench/inputs.mjs';
import { Scratch, isRoot, machine, stopReferences } from '../bench/env.mjs';
import { applyCases } from '../bench/cases/apply.mjs';
import { exportCases } from '../bench/cases/export.mjs';
import { changesCases } from '../bench/cases/changes.mjs';
import { vfsCreateCases } from '../bench/cases/vfs-create.mjs';
import { overlayMountCases } from '../bench/cases/overlay2-mount.mjs';
import { btrfsCases } from '../bench/cases/btrfs-layer.mjs';
import { zfsCases } from '../bench/cases/zfs-layer.mjs';
import { dmCases } from '../bench/cases/dm-layer.mjs';
import { rssCase } from '../bench/cases/rss.mjs';
import { importCases } from '../bench/cases/import.mjs';
import { importRssCases } from '../bench/cases/import-rss.mjs';
import { importFloorCases } from '../bench/cases/import-floor.mjs';
import { exportImageCases } from '../bench/cases/export-image.mjs';
import { idmapGetCases, rootlessImportCases } from '../bench/cases/idmap.mjs';
import { podmanIdmapCases } from '../bench/cases/podman.mjs';
import { pullCases } from '../bench/cases/pull.mjs';
import { multiprocCases } from '../bench/cases/multiproc.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const value = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const check = flag('--check');
const quick = flag('--quick') || check;
const json = flag('--json');
const pairs = Number(value('--pairs') ?? (check ? 3 : 5));
const all = ['apply', 'export', 'changes', 'vfs-create', 'overlay2', 'multiproc', 'btrfs', 'zfs', 'dm', 'import', 'import-floor', 'export-image', 'pull', 'idmap', 'idmap-copy', 'rootless-import', 'rss', 'import-rss'];
const boundsFile = join(dirname(fileURLToPath(import.meta.url)), '..', 'bench', 'bounds.json');
const bounds = check ? loadBounds(boundsFile) : null;
const only = (value('--only') ?? (check ? bounds.cases.join(',') : all.join(','))).split(',');
const noDisk = flag('--no-disk') || check;

if (!isRoot()) {
  console.error('npm run bench needs root: it mounts tmpfs, overlay and a loopback btrfs.');
  process.exit(1);
}
const dist = (pkg, file = 'index.js') => join(repo, 'packages', pkg, 'dist', file);
if (!existsSync(dist('archive')) || !existsSync(dist('cairnfs'))) {
  console.error('Build first: npx tsc -b (the bench measures the compiled packages).');
  process.exit(1);
}
const load = (pkg, file) => import(pathToFileURL(dist(pkg, file)).href);
const archive = await load('archive');
const cairn = await load('cairnfs');
const sys = await load('sys');
const overlay2 = await load('overlay2');
const testkit = await load('testkit', 'loopfs.js');
const image = await load('image');
const dockerdKit = await load('testkit', 'dockerd.js');
const registryKit = await load('testkit', 'registry.js');
const zfsKit = await load('testkit', 'zfs.js');
const vmKit = await load('testkit', 'vm.js');
const dm = await load('devicemapper');

const layerParams = quick ? { files: 5000, totalBytes: 50 * 1024 * 1024 } : { files: 20000, totalBytes: 200 * 1024 * 1024 };
const walkParams = quick ? { files: 20000, totalBytes: 20 * 1024 * 1024 } : { files: 100000, totalBytes: 100 * 1024 * 1024 };
const rssGiB = quick ? 0.5 : 2;
const imageParams = quick ? { files: 5000, totalBytes: 50 * 1024 * 1024 } : { files: 20000, totalBytes: 200 * 1024 * 1024 };

const info = machine();
const out = { machine: info, command: `npm run bench -- ${args.join(' ')}`.trim(), pathMode: process.env.CAIRN_PURE_JS === '1' ? 'pure-js' : 'default', results: [] };
const log = (line) => { if (!json) console.log(line); };
log(`machine: ${info.nproc} cpus (${info.cpu}), ${info.memGiB} GiB, kernel ${info.kernel}, node ${info.node}, ${info.gnuTar}, repo disk ${info.repoDiskFs}, load ${info.loadavg}`);

const report = (rs) => {
  for (const r of rs) {
    out.results.push(r);
    if (r.skipped) log(`${r.name.padEnd(44)} skipped: ${r.skipped}`);
    else if (r.peakRssMiB !== undefined) log(`${r.name.padEnd(44)} ${r.peakRssMiB.toFixed(0)} MiB peak RSS, ${(r.bytes / 2 ** 20).toFixed(0)} MiB in ${(r.ms / 1000).toFixed(1)} s`);
    else log(formatResult(r));
  }
};

const scratch = new Scratch();
const onSignal = () => { scratch.cleanup(); process.exit(130); };
process.on('SIGINT', onSignal);
try {
  // Generated (or read from the cache) only for the cases that use it: `--only dm` runs
  // inside the test VM, where the host's input cache is not.
  const needsLayer = ['apply', 'export', 'vfs-create'].some((c) => only.includes(c));
  const layer = needsLayer ? await cachedInput('layer', layerParams) : null;
  if (layer) log(`layer input: ${layer.files} files, ${(layer.bytes / 2 ** 20).toFixed(0)} MiB (${layer.tar})`);
  const label = layer ? `${layer.files} files` : '';
  if (only.includes('apply')) {
    if (!noDisk) report(await applyCases({ input: layer, base: scratch.dir('disk'), label: `${label}, repo disk`, pairs, archive, cairn }));
    const tmp = scratch.tmpfs('tmpfs', 4096);
    report(await applyCases({ input: layer, base: tmp, label: `${label}, tmpfs`, pairs, archive, cairn }));
  }
  if (only.includes('export')) report(await exportCases({ input: layer, base: scratch.dir('export'), label, pairs, archive, cairn }));
  if (only.includes('vfs-create')) report(await vfsCreateCases({ input: layer, base: scratch.dir('vfs'), label, pairs, cairn }));
  if (only.includes('changes')) {
    const walk = await cachedInput('walk', walkParams);
    report(await changesCases({ input: walk, label: `${walk.files} files`, pairs, archive }));
  }
  if (only.includes('overlay2')) report(await overlayMountCases({ base: scratch.dir('ovl'), pairs, cairn, sys, overlay2 }));
  if (only.includes('multiproc')) report(await multiprocCases({ base: scratch.dir('multiproc'), pairs, cairn, sys, repo }));
  if (only.includes('btrfs')) report(await btrfsCases({ pairs, cairn, testkit }));
  if (only.includes('zfs')) report(await zfsCases({ pairs, cairn, zfsKit }));
  if (only.includes('dm')) report(await dmCases({ pairs, cairn, dm, vmKit, repo }));
  if (only.includes('import')) {
    const importCase = (base, where, opts = {}) => importCases({ params: imageParams, base, where, pairs, cairn, image, testkit: dockerdKit, ...opts });
    // On the disk, no side removes anything until the case ends (ext4's recently_deleted()
    // scan, see importCases), so docker load, which must remove each image before the next
    // load, is compared on tmpfs only.
    if (!noDisk) report(await importCase(scratch.dir('import'), 'repo disk', { withDocker: false, deferRemovals: true }));
    // --check guards the ratios against tar only: docker load is a comparison, not a bound.
    report(await importCase(scratch.tmpfs('import', 4096), 'tmpfs', check ? { withDocker: false } : {}));
  }
  if (only.includes('import-floor')) report(await importFloorCases({ params: imageParams, base: scratch.tmpfs('import-floor', 4096), pairs, sys }));
  if (only.includes('export-image')) {
    const exportImageCase = (base, where) => exportImageCases({ params: imageParams, base, where, pairs, cairn, image, archive, sys });
    if (!noDisk) report(await exportImageCase(scratch.dir('export-image'), 'repo disk'));
    report(await exportImageCase(scratch.tmpfs('export-image', 4096), 'tmpfs'));
  }
  const idmapFileCounts = quick ? [imageParams.files] : [20000, 100000];
  if (only.includes('idmap')) {
    report(await idmapGetCases({ base: scratch.dir('idmap'), pairs, cairn, image, imageParams, fileCounts: idmapFileCounts, copies: false }));
  }
  if (only.includes('idmap-copy')) {
    report(await idmapGetCases({ base: scratch.dir('idmap'), pairs, cairn, image, imageParams, fileCounts: idmapFileCounts, mounts: false }));
    // podman's way on the same image (rootless, a chown copy per map): issue 18's comparison.
    const podmanKit = await load('testkit', 'index.js');
    report(await podmanIdmapCases({ base: scratch.dir('idmap'), pairs, cairn, image, imageParams, testkit: podmanKit, fileCounts: idmapFileCounts }));
  }
  if (only.includes('rootless-import')) {
    const rootlessKit = await load('testkit', 'index.js');
    report(await rootlessImportCases({ pairs, imageParams, testkit: { ...rootlessKit, repoRoot: repo } }));
  }
  if (only.includes('pull')) {
    const pullCase = (base, where) => pullCases({ params: imageParams, base, where, pairs, cairn, image, dockerKit: dockerdKit, registryKit });
    if (!noDisk) report(await pullCase(scratch.dir('pull'), 'repo disk'));
    report(await pullCase(scratch.tmpfs('pull', 4096), 'tmpfs'));
  }
  if (only.includes('import-rss')) {
    report(await importRssCases({ base: scratch.tmpfs('import-rss', quick ? 2048 : 4096), imageParams, gib: rssGiB, archive }));
  }
  if (only.includes('rss')) {
    report([rssCase({ base: scratch.dir('rss'), gib: rssGiB, archiveDist: pathToFileURL(dist('archive')).href, native: process.env.CAIRN_PURE_JS !== '1' })]);
  }
} finally {
  stopReferences();
  scratch.cleanup();
}
if (json) console.log(JSON.stringify(out, null, 2));
if (check) {
  // With --only, just the bounds of the cases that ran (a plain --check runs them all).
  const judged = { ...bounds, bounds: bounds.bounds.filter((b) => only.includes(b.case)) };
  const failures = judge(out.results, judged);
  for (const f of failures) console.error(`bench check FAILED: ${f}`);
  // A bound can fail twice (wall and CPU): count bounds, not lines.
  const failed = judged.bounds.filter((b) => failures.some((f) => f.startsWith(`${b.name} vs ${b.reference}: `))).length;
  console.log(`bench: ${judged.bounds.length - failed} passed, ${failed} failed (margins: cpu ${bounds.margin.cpu}×, wall ${bounds.margin.wall}×; bounds in bench/bounds.json)`);
  if (failures.length > 0) process.exit(1);
}
