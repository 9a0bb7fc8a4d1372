// The child side of race.test.ts's pure-JS export case, in its own process so a
// JS thread blocked for ever in open(2) of a fifo (the old export path) shows as a child
// that never answers, not as a hung test worker. Usage:
//   node --import scripts/ts-register.mjs race-export-child.ts <layer> <rounds>
// Prints one JSON line: { outcomes: { ok | <code>: n }, devBytes: n } where devBytes
// counts content bytes of regular-file entries that are not the file's own ('A').
import { isCairnError } from '@cairnfs/core';
import { exportTree, readTar } from '@cairnfs/archive';

const [layer, roundsText] = process.argv.slice(2);
const outcomes: Record<string, number> = {};
let devBytes = 0;
for (let r = 0; r < Number(roundsText); r++) {
  let outcome = 'ok';
  try {
    for await (const { header, body } of readTar(await exportTree(layer!, { pureJs: true }))) {
      for await (const chunk of body) {
        if (header.type !== 'file') continue;
        for (const byte of chunk) if (byte !== 0x41) devBytes++;
      }
    }
  } catch (err) {
    outcome = isCairnError(err) ? err.code : `not a CairnError: ${String(err)}`;
  }
  outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
}
process.stdout.write(JSON.stringify({ outcomes, devBytes }) + '\n');
