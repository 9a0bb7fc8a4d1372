// The benchmark harness: every cairn operation is timed against a reference measured in
// the same run on the same input, alternating A B A B so drift (page cache, other load)
// hits both sides alike. Results are medians with min–max and the ratio cairn/reference.
import { performance } from 'node:perf_hooks';

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * Runs `pairs` rounds of { setup → cairn } and { setup → reference }, alternating.
 * `setup` runs untimed before each side (fresh target dirs, dropped mounts).
 */
export async function comparePair({ name, pairs = 5, setup, cairn, reference, referenceName }) {
  const a = [];
  const b = [];
  for (let i = 0; i < pairs; i++) {
    for (const [side, fn, out] of [['cairn', cairn, a], ['reference', reference, b]]) {
      const ctx = setup ? await setup(side, i) : undefined;
      const t0 = performance.now();
      await fn(ctx);
      out.push(performance.now() - t0);
      if (ctx?.teardown) await ctx.teardown();
    }
  }
  const result = {
    name,
    reference: referenceName,
    pairs,
    cairnMs: { median: median(a), min: Math.min(...a), max: Math.max(...a) },
    referenceMs: { median: median(b), min: Math.min(...b), max: Math.max(...b) },
  };
  result.ratio = result.cairnMs.median / result.referenceMs.median;
  return result;
}

export function formatResult(r) {
  const f = (x) => x.toFixed(1).padStart(8);
  return `${r.name.padEnd(44)} cairn ${f(r.cairnMs.median)} ms [${r.cairnMs.min.toFixed(1)}–${r.cairnMs.max.toFixed(1)}]` +
    `   ${r.reference} ${f(r.referenceMs.median)} ms [${r.referenceMs.min.toFixed(1)}–${r.referenceMs.max.toFixed(1)}]` +
    `   ratio ${r.ratio.toFixed(2)}×`;
}
