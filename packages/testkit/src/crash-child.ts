/**
 * The child side of the kill -9 harness (see crash.ts). Started by
 * `node --import scripts/ts-register.mjs crash-child.ts`, it loads the drivers, says
 * `loaded`, reads one plan from stdin, opens the home, says `opened`, then runs the ops
 * and journals `{"begin":i}` / `{"end":i}` on stdout so the parent knows what finished
 * before it killed us. Each line is written synchronously: a line printed is a step done.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { layerTar } from './crash.js';
import type { CrashPlan } from './crash.js';
import { loadDriverFactory, readPlan, runChild, runJournaled, say } from './crash-protocol.js';

async function main(): Promise<void> {
  // Load the drivers before saying we are ready, so the kill clock starts on driver work.
  const name = process.argv[2] ?? 'vfs';
  const factory = await loadDriverFactory(name);
  say('loaded');
  const plan = await readPlan<CrashPlan>();
  const driver = await factory.open({ root: plan.root, home: join(plan.root, factory.name), options: plan.options ?? {}, lockTimeoutMs: 5000 });
  say({ opened: true });
  await runJournaled(plan.ops, async (op) => {
    switch (op.op) {
      case 'create': await driver.create(op.id, op.parent); break;
      case 'createRW': await driver.createReadWrite(op.id, op.parent); break;
      case 'apply': await driver.applyDiff(op.id, undefined, Readable.from([layerTar(op.id, op.seed, op.bytes, op.whiteout)])); break;
      case 'remove': await driver.remove(op.id); break;
      case 'mount': {
        const root = await driver.get(op.id);
        await readFile(join(root, 'common', 's0')).catch(() => undefined);
        await driver.put(op.id);
        break;
      }
    }
  }, (op) => `${op.op} ${op.id}`);
  await driver.cleanup();
  say({ done: true });
}

runChild(main);
