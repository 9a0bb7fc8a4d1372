#!/usr/bin/env node
// `npm test`: runs jest over every package with ESM enabled, logging which real
// backends each suite used so the reporter can say what ran and what was skipped.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const log = mkdtempSync(join(tmpdir(), 'cairn-backends-'));
const env = {
  ...process.env,
  CAIRN_BACKEND_LOG: log,
  NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --experimental-vm-modules --no-warnings=ExperimentalWarning`.trim(),
};
const jest = join(repo, 'node_modules', 'jest', 'bin', 'jest.js');

// `--root-free`: the suites that pass as an unprivileged user (what needs root in them,
// such as migrate's overlay2 cases, is behind backend gates): the tar engine, ids, locks,
// the registry, migration, option parsing, the addon loader — the code where Node's own
// APIs (streams, fs, workers, ESM) matter most. CI runs them on each supported Node
// version besides the one that runs everything.
const ROOT_FREE = [
  'packages/archive/test/apply.test.ts', 'packages/archive/test/hostile.test.ts',
  'packages/archive/test/offthread.test.ts', 'packages/archive/test/pax-parse.test.ts',
  'packages/archive/test/purejs.test.ts', 'packages/archive/test/safe-path.test.ts',
  'packages/archive/test/naivediff.test.ts', 'packages/cairnfs/test/migrate.test.ts',
  'packages/core/test/ids.test.ts', 'packages/core/test/storelock.test.ts', 'packages/core/test/holds.test.ts',
  'packages/core/test/registry.test.ts', 'packages/core/test/staging.test.ts',
  'packages/devicemapper/test/options.test.ts', 'packages/sys/test/load.test.ts', 'packages/sys/test/zstd.test.ts',
];
// A suite that moved must not silently drop out of the list (jest takes paths as patterns).
for (const f of ROOT_FREE) if (!existsSync(join(repo, f))) throw new Error(`scripts/test.mjs: root-free suite ${f} does not exist; update ROOT_FREE`);
const args = process.argv.slice(2).flatMap((a) => (a === '--root-free' ? ROOT_FREE : [a]));
const result = spawnSync(process.execPath, [jest, '--maxWorkers=2', ...args], { cwd: repo, env, stdio: 'inherit' });
rmSync(log, { recursive: true, force: true });
process.exit(result.status ?? 1);
