// `npm run bench -- --check`: the regression guard. Compares each ratio of a quick run with
// its recorded bound in bench/bounds.json and fails when a ratio is worse than the bound
// times the margin. The bounds are what the last recorded runs showed (docs/benchmarks.md),
// not the goals; the margin is wide on purpose (see bounds.json's `margin` and its note):
// it must not trip on noise of a shared 2-CPU machine under load, only on a real regression.
import { readFileSync } from 'node:fs';

/** The bounds file: `{ margin: { wall, cpu }, note, cases, bounds: [{ case, name, reference, wall, cpu }] }`. */
export function loadBounds(path) {
  const spec = JSON.parse(readFileSync(path, 'utf8'));
  // Each bound names the case that makes its result (`--only` runs judge only theirs); a
  // bound whose case is not run by --check would never be judged.
  for (const b of spec.bounds) {
    if (!spec.cases.includes(b.case)) throw new Error(`bench/bounds.json: bound "${b.name}" names case ${JSON.stringify(b.case)}, which is not among the cases --check runs (${spec.cases.join(', ')})`);
  }
  return spec;
}

/**
 * The failures of `results` against `spec`: one line each, naming the case, the ratio, the
 * bound and the margin. A result without a bound is not judged; a bound without a result
 * fails (a renamed or dropped case must not silently stop being guarded).
 */
export function judge(results, spec) {
  const failures = [];
  for (const bound of spec.bounds) {
    const r = results.find((x) => x.name === bound.name && x.reference === bound.reference);
    if (!r) {
      failures.push(`${bound.name} vs ${bound.reference}: no such result in this run`);
      continue;
    }
    for (const [key, measured] of [['wall', r.ratio], ['cpu', r.cpuRatio]]) {
      const limit = bound[key] * spec.margin[key];
      if (bound[key] !== undefined && measured > limit) {
        failures.push(`${bound.name} vs ${bound.reference}: ${key} ratio ${measured.toFixed(2)}× exceeds ${bound[key]}× × margin ${spec.margin[key]} = ${limit.toFixed(2)}×`);
      }
    }
  }
  return failures;
}
