/* eslint-disable @typescript-eslint/no-require-imports -- this file is the CommonJS consumer: require() is what it tests */
// CommonJS consumer: require() of the ES-module packages (Node >= 20.19 and 22.12 load
// an ES module graph without top-level await synchronously).
const assert = require('node:assert/strict');
const { mkdtempSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const cairn = require('cairnfs');
const sys = require('@cairnfs/sys');
const core = require('@cairnfs/core');
const image = require('@cairnfs/image');
const pkg = require('cairnfs/package.json');

assert.equal(typeof sys.makedev(8, 1), 'number');
assert.equal(cairn.CairnError, core.CairnError, 'one copy of core behind the umbrella');
assert.equal(cairn.LayerStore, image.LayerStore);
assert.equal(pkg.name, 'cairnfs');

(async () => {
  const root = mkdtempSync(join(tmpdir(), 'cairn-pack-cjs-'));
  try {
    const driver = await cairn.openDriver({ root, driver: 'vfs' });
    await driver.create('base', null);
    assert.equal(await driver.exists('base'), true);
    await driver.cleanup();
    console.log('cjs consumer: ok');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
})().catch((err) => { console.error(err); process.exit(1); });
