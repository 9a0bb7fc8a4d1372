// The reference tools' launcher: a small process that runs each command it is sent (one
// JSON line on stdin: [cmd, args]) to completion and answers with one JSON line
// { status, cpuMs }, cpuMs being the command's user+system CPU (this process's reaped
// children: cutime+cstime, 10 ms ticks).
//
// Why not spawn from the bench process itself: Node spawns with fork(), which marks every
// page of the (large) bench process copy-on-write; after the reference exits, the next
// cairn run takes a page fault on every page it writes, and those faults were charged to
// cairn (measured: an export run right after a tar run cost ~1.5x the CPU of one run right
// after another export). Forking from this small process keeps that cost off both sides.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

function childTicks() {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[13]) + Number(fields[14]);
}

for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, args, env] = JSON.parse(line);
  const t0 = childTicks();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'], env: env ?? process.env });
  const cpuMs = (childTicks() - t0) * 10;
  process.stdout.write(JSON.stringify({ status: r.status, error: r.error?.message ?? null, cpuMs }) + '\n');
}
