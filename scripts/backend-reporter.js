// Prints, after the jest summary, a plain count of tests and which real backends ran and which
// were skipped and why.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export default class BackendReporter {
  onRunComplete(_contexts, results) {
    // One plain line a CI reader can count: jest's own summary is in its own format.
    if (results) process.stdout.write(`\ntests: ${results.numPassedTests} passed, ${results.numFailedTests} failed, ${results.numPendingTests} skipped\n`);
    const dir = process.env.CAIRN_BACKEND_LOG;
    if (!dir) return;
    const seen = new Map();
    let files = [];
    try { files = readdirSync(dir); } catch { return; }
    for (const f of files) {
      for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
        if (!line) continue;
        const { backend, ran, reason } = JSON.parse(line);
        const prev = seen.get(backend);
        if (!prev || (prev.ran && !ran)) seen.set(backend, { ran, reason });
      }
    }
    if (seen.size === 0) return;
    const lines = [...seen.entries()].sort().map(([b, s]) => s.ran ? `  ran      ${b}` : `  skipped  ${b}: ${s.reason}`);
    process.stdout.write(`\nbackends:\n${lines.join('\n')}\n`);
  }
}
