import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Gates a block of tests on a real backend (a kernel filesystem, a tool, a daemon).
 * `missing` is null when the backend is here, or the reason it is not, naming what to
 * install. Without it the block is skipped with that reason printed; with
 * CAIRN_REQUIRE_ALL=1 (as in CI) a missing backend is a failing test instead.
 * Every decision is logged so `npm test` can print which backends ran.
 */
export function describeBackend(backend: string, missing: string | null, body: () => void): void {
  record(backend, missing);
  if (missing === null) {
    describe(`[${backend}]`, body);
    return;
  }
  if (process.env.CAIRN_REQUIRE_ALL === '1') {
    describe(`[${backend}]`, () => {
      test(`backend ${backend} is available (CAIRN_REQUIRE_ALL=1)`, () => {
        throw new Error(`backend ${backend} is required but missing: ${missing}`);
      });
    });
  } else {
    // Only outside CI: the block is skipped, named with what is missing.
    console.warn(`skipping [${backend}] tests: ${missing}`);
    describe.skip(`[${backend}] (skipped: ${missing})`, body);
  }
}

function record(backend: string, missing: string | null): void {
  const dir = process.env.CAIRN_BACKEND_LOG;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  const line = JSON.stringify({ backend, ran: missing === null, reason: missing }) + '\n';
  appendFileSync(join(dir, `${process.pid}.jsonl`), line);
}
