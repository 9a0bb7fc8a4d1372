// One importImage of a docker-save tarball into a fresh overlay2 store, timed in-process;
// prints { ms, cpuMs, hwmMiB } (hwmMiB: the process's peak RSS, VmHWM). Run as root, or
// as a rootless user inside `cairn unshare` (then the store goes in a temp
// dir of its own). Used by bench/cases/idmap.mjs.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { openDriver } from 'cairnfs';
import { LayerStore } from '@cairnfs/image';

const [archive, dirArg] = process.argv.slice(2);
const dir = dirArg ?? mkdtempSync('/tmp/cairn-bench-rootless-import-');
try {
  const driver = await openDriver({ root: dir, driver: 'overlay2' });
  const store = await LayerStore.open(driver);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await store.importImage(archive);
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  await store.close();
  await driver.cleanup();
  const hwmKiB = Number(/^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'latin1'))?.[1] ?? NaN);
  process.stdout.write(JSON.stringify({ ms, cpuMs: (cpu.user + cpu.system) / 1000, hwmMiB: hwmKiB / 1024 }) + '\n');
} finally {
  if (!dirArg) rmSync(dir, { recursive: true, force: true });
}
