#!/usr/bin/env node
// Regenerates the addon fuzzer's seed corpus (packages/sys/fuzz/corpus) from the hostile
// archive catalogue (packages/archive/test/hostile.test.ts), which writes each case's tar
// when CAIRN_FUZZ_CORPUS names a directory. The hostile tests run as usual meanwhile.
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const corpus = join(repo, 'packages/sys/fuzz/corpus');
rmSync(corpus, { recursive: true, force: true });
const r = spawnSync(process.execPath, [join(repo, 'scripts/test.mjs'), 'packages/archive/test/hostile'], {
  cwd: repo, stdio: 'inherit', env: { ...process.env, CAIRN_FUZZ_CORPUS: corpus },
});
process.exit(r.status ?? 1);
