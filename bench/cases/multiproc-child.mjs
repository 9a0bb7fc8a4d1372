// One process of the contention bench (multiproc.mjs): opens overlay2 on ROOT, says
// `ready`, waits for `go`, then makes COUNT container layers on the bench's `base` layer,
// each created, got (an overlay mount), put and removed, and says `done <cpu ms>`.
import { createInterface } from 'node:readline';

const [root, prefix, count, cairnDist] = process.argv.slice(2);
const cairn = await import(cairnDist);
const driver = await cairn.openDriver({ root, driver: 'overlay2' });
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
process.stdout.write('ready\n');
await lines.next();
const cpu0 = process.cpuUsage();
try {
  for (let i = 0; i < Number(count); i++) {
    const id = `${prefix}-${i}`;
    await driver.createReadWrite(id, 'base');
    await driver.get(id);
    await driver.put(id);
    await driver.remove(id);
  }
  const { user, system } = process.cpuUsage(cpu0);
  process.stdout.write(`done ${(user + system) / 1000}\n`);
} catch (err) {
  process.stdout.write(`error ${err.code ?? ''} ${err.message}\n`);
}
await driver.cleanup();
await lines.next();
