// Child process for the peak-RSS case: streams a generated layer of `GiB` gibibytes
// (a few big files and many 1 MiB ones, generated on the fly, never on disk as a tar)
// into applyLayer and prints the process's peak RSS (VmHWM) as JSON.
import { readFileSync } from 'node:fs';

const [archiveDist, target, gib] = process.argv.slice(2);
const archive = await import(archiveDist);
const total = Number(gib) * 1024 ** 3;
const MiB = 1024 * 1024;

function* body(size) {
  for (let left = size; left > 0; left -= MiB) yield Buffer.alloc(Math.min(MiB, left), 0x61);
}
function* entries() {
  let made = 0;
  for (let i = 0; made < total / 2; i++, made += 256 * MiB) {
    yield { header: { name: `big${i}`, type: 'file', mode: 0o644, size: 256 * MiB }, body: body(256 * MiB) };
  }
  yield { header: { name: 'small', type: 'dir', mode: 0o755 } };
  for (let i = 0; made < total; i++, made += MiB) {
    yield { header: { name: `small/f${i}`, type: 'file', mode: 0o644, size: MiB }, body: body(MiB) };
  }
}
const t0 = performance.now();
const bytes = await archive.applyLayer(target, archive.packEntries(entries()));
const ms = performance.now() - t0;
const hwm = Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
process.stdout.write(JSON.stringify({ bytes, ms, peakRssMiB: hwm / 1024 }) + '\n');
