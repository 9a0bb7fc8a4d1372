// The child side of race-beneath.test.ts's content-check case, in its own process so a JS
// thread blocked for ever in open(2) of a fifo (sameContent opening by name, the old
// code) shows as a child that never answers, not as a hung test worker. Usage:
//   node --import scripts/ts-register.mjs race-changes-child.ts <layer> <parent> <rounds> <pure|native>
// Prints one JSON line: { outcomes: { ok | <code>: n }, modified: n } (rounds that reported d/f modified).
import { changesBetween } from '@cairnfs/archive';

const [layer, parent, roundsText, engine] = process.argv.slice(2);
const outcomes: Record<string, number> = {};
let modified = 0;
for (let r = 0; r < Number(roundsText); r++) {
  let outcome = 'ok';
  try {
    const changes = await changesBetween(layer!, parent!, { contentCheckSinceSec: 0, pureJs: engine === 'pure' });
    if (changes.some((c) => c.path === '/d/f')) modified++;
  } catch (err) {
    outcome = (err as { code?: string }).code ?? String(err);
  }
  outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
}
process.stdout.write(JSON.stringify({ outcomes, modified }) + '\n');
