// Runs a jest test file on Node's own test runner, without jest: jest's module resolver and
// the swc transform that `npm test` uses are native modules installed for x64 only, and
// jest itself is too heavy to start under qemu-user. Used by scripts/arm64/test-sys.sh:
//
//   node --experimental-transform-types --import ./scripts/arm64/jest-globals.mjs FILE.test.ts
//
// Node strips the TypeScript itself; the hooks below map imports the way jest.config.js
// does (workspace packages to their sources, `./x.js` to `./x.ts`), and the globals are
// jest's names over node:test, with jest's own `expect` package for the assertions.
import { register } from 'node:module';
import { after, afterEach, before, beforeEach, describe as nodeDescribe, test as nodeTest } from 'node:test';
import { expect } from 'expect';

register(new URL('./resolve-hooks.mjs', import.meta.url));

/** jest's printf-style title for one row of test.each: %s %d %i %p %j %o take the row's values in turn. */
function eachTitle(title, args) {
  let i = 0;
  return title.replace(/%[sdipjo%]/g, (m) => (m === '%%' ? '%' : i < args.length ? String(args[i++]) : m));
}

/** jest's test(name, fn, timeout) as node:test's test(name, { timeout }, fn), with test.each. */
function wrapTest(fn) {
  const wrapped = (name, body, timeout) => fn(name, timeout ? { timeout } : {}, body);
  wrapped.skip = (name, body) => fn(name, { skip: true }, body);
  wrapped.only = (name, body, timeout) => fn(name, { only: true, ...(timeout ? { timeout } : {}) }, body);
  // Rows are arrays (spread into the body) or single values, as in jest.
  wrapped.each = (rows) => (title, body, timeout) => {
    for (const row of rows) {
      const args = Array.isArray(row) ? row : [row];
      fn(eachTitle(title, args), timeout ? { timeout } : {}, () => body(...args));
    }
  };
  return wrapped;
}

/** jest's describe.each: one describe per row, the row's values passed to the body. */
function describeEach(rows) {
  return (title, body) => {
    for (const row of rows) {
      const args = Array.isArray(row) ? row : [row];
      nodeDescribe(eachTitle(title, args), () => body(...args));
    }
  };
}

Object.assign(globalThis, {
  describe: Object.assign((name, body) => nodeDescribe(name, body), {
    // Only testkit's describeBackend and testWhen skip, naming what is missing in the title
    // (and fail instead under CAIRN_REQUIRE_ALL=1): node:test gets that title as the reason.
    skip: (name, body) => nodeDescribe(name, { skip: name }, body),
    each: describeEach,
  }),
  test: wrapTest(nodeTest),
  it: wrapTest(nodeTest),
  beforeAll: (fn, timeout) => before(fn, timeout ? { timeout } : {}),
  afterAll: (fn, timeout) => after(fn, timeout ? { timeout } : {}),
  beforeEach: (fn, timeout) => beforeEach(fn, timeout ? { timeout } : {}),
  afterEach: (fn, timeout) => afterEach(fn, timeout ? { timeout } : {}),
  expect,
});
