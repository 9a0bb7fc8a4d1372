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
  gate(`backend ${backend}`, missing,
    () => describe(`[${backend}]`, () => {
      test(`backend ${backend} is available (CAIRN_REQUIRE_ALL=1)`, () => {
        throw new Error(`backend ${backend} is required but missing: ${missing}`);
      });
    }),
    (skipped) => (skipped ? describe.skip : describe)(`[${backend}]${skipped ? ` (skipped: ${missing})` : ''}`, body));
}

/**
 * One test gated on a prerequisite that is not a backend (root, a kernel API), as
 * describeBackend gates a block: `missing` is null when it is met, else what is missing;
 * then the test is skipped with that in its title, or with CAIRN_REQUIRE_ALL=1 it fails
 * saying so.
 */
export function testWhen(missing: string | null, name: string, fn: Parameters<typeof test>[1], timeout?: number): void {
  gate(`"${name}"`, missing,
    () => test(`${name} (CAIRN_REQUIRE_ALL=1)`, () => {
      throw new Error(`this test requires ${missing}, which is missing here`);
    }),
    (skipped) => (skipped ? test.skip : test)(skipped ? `${name} (skipped: ${missing})` : name, fn, timeout));
}

/** A test that needs root: testWhen(notRoot, …). */
export function testAsRoot(name: string, fn: Parameters<typeof test>[1], timeout?: number): void {
  testWhen(notRoot, name, fn, timeout);
}

/** What a root-only test is missing when this process is not root (testWhen's `missing`), or null. */
export const notRoot: string | null = process.getuid?.() === 0
  ? null
  : 'root (as in CI: chown to other owners, device nodes, xattrs in the trusted namespace)';

// Runs the block or test (`define(false)`); where `missing` is set, fails it under
// CAIRN_REQUIRE_ALL=1 (`failing`), else defines it skipped, saying why.
function gate(what: string, missing: string | null, failing: () => void, define: (skipped: boolean) => void): void {
  if (missing === null) {
    define(false);
  } else if (process.env.CAIRN_REQUIRE_ALL === '1') {
    failing();
  } else {
    console.warn(`skipping ${what}: ${missing}`);
    define(true);
  }
}

function record(backend: string, missing: string | null): void {
  const dir = process.env.CAIRN_BACKEND_LOG;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  const line = JSON.stringify({ backend, ran: missing === null, reason: missing }) + '\n';
  appendFileSync(join(dir, `${process.pid}.jsonl`), line);
}
