#!/usr/bin/env node
// `npm test`: runs jest over every package with ESM enabled, logging which real
// backends each suite used so the reporter can say what ran and what was skipped.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
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
const result = spawnSync(process.execPath, [jest, '--maxWorkers=2', ...process.argv.slice(2)], { cwd: repo, env, stdio: 'inherit' });
rmSync(log, { recursive: true, force: true });
process.exit(result.status ?? 1);
