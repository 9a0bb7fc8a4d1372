// The child side of race-beneath.test.ts's copyTree fifo case, in its own process so a
// thread blocked for ever opening a fifo (copyFile by name, the old copy) shows as a child
// that never answers, not as a hung test worker. Usage:
//   node --import scripts/ts-register.mjs race-copy-child.ts <src> <scratch> <rounds>
// Prints one JSON line: { outcomes: { ok | <code>: n } }.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { copyTree } from '@cairnfs/core';

const [src, scratch, roundsText] = process.argv.slice(2);
const outcomes: Record<string, number> = {};
for (let r = 0; r < Number(roundsText); r++) {
  const dst = join(scratch!, `copy${r}`);
  let outcome = 'ok';
  try {
    await copyTree(src!, dst, { reflink: 'never' });
  } catch (err) {
    outcome = (err as { code?: string }).code ?? String(err);
  }
  rmSync(dst, { recursive: true, force: true });
  outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
}
process.stdout.write(JSON.stringify({ outcomes }) + '\n');
