// The benchmark harness: every cairn operation is timed against a reference measured in
// the same run on the same input, alternating A B A B so drift (page cache, other load)
// hits both sides alike. Results are medians with min–max and the ratio cairn/reference.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

/**
 * CPU milliseconds used so far by this process (all threads) plus its reaped children
 * (cutime+cstime from /proc/self/stat, 10 ms ticks): the reference tools run as
 * children, cairn in-process. On a loaded machine CPU time is the steadier comparison;
 * wall time is what users see.
 */
export function cpuMs() {
  const { user, system } = process.cpuUsage();
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const childTicks = Number(fields[13]) + Number(fields[14]); // cutime, cstime (fields 16, 17)
  return (user + system) / 1000 + childTicks * 10;
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * Runs `pairs` rounds of { setup → cairn } and { setup → reference }, alternating.
 * `setup` runs untimed before each side (fresh target dirs, dropped mounts); it gets
 * (side, index), indexes counting from 0 with the warm-up round first.
 */
export async function comparePair({ name, pairs = 5, warmup = 1, setup, cairn, reference, referenceName }) {
  const a = [];
  const b = [];
  const ca = [];
  const cb = [];
  // Untimed warm-up pairs (index < 0): JIT, page cache and dentry cache for both sides.
  for (let i = -warmup; i < pairs; i++) {
    for (const [side, fn, out, cpuOut] of [['cairn', cairn, a, ca], ['reference', reference, b, cb]]) {
      const ctx = setup ? await setup(side, i + warmup) : undefined;
      const c0 = cpuMs();
      const t0 = performance.now();
      const r = await fn(ctx);
      if (i >= 0) {
        out.push(performance.now() - t0);
        // A side run through runReference reports its tool's own CPU (a child of the
        // launcher, not of this process); what this process spent meanwhile is added.
        cpuOut.push(cpuMs() - c0 + (typeof r?.cpuMs === 'number' ? r.cpuMs : 0));
      }
      if (ctx?.teardown) await ctx.teardown();
    }
  }
  return summarize(name, referenceName, a, b, ca, cb, pairs);
}

/** Median, min–max and ratios of timed runs: `a`/`b` wall ms of cairn/reference, `ca`/`cb` their CPU ms. */
export function summarize(name, referenceName, a, b, ca, cb, pairs) {
  const result = {
    name,
    reference: referenceName,
    pairs,
    cairnMs: { median: median(a), min: Math.min(...a), max: Math.max(...a) },
    referenceMs: { median: median(b), min: Math.min(...b), max: Math.max(...b) },
  };
  result.ratio = result.cairnMs.median / result.referenceMs.median;
  result.cairnCpuMs = median(ca);
  result.referenceCpuMs = median(cb);
  result.cpuRatio = result.cairnCpuMs / result.referenceCpuMs;
  return result;
}

export function formatResult(r) {
  const f = (x) => x.toFixed(1).padStart(8);
  return `${r.name.padEnd(44)} cairn ${f(r.cairnMs.median)} ms [${r.cairnMs.min.toFixed(1)}–${r.cairnMs.max.toFixed(1)}]` +
    `   ${r.reference} ${f(r.referenceMs.median)} ms [${r.referenceMs.min.toFixed(1)}–${r.referenceMs.max.toFixed(1)}]` +
    `   ratio ${r.ratio.toFixed(2)}×   cpu ${r.cairnCpuMs.toFixed(0)}/${r.referenceCpuMs.toFixed(0)} ms = ${r.cpuRatio.toFixed(2)}×` +
    (r.cairnMajorGcs === undefined ? '' : `   mark-compacts ${r.cairnMajorGcs} in ${r.cairnRuns} runs`);
}
