/**
 * The child side of the image import kill trials (crash-import.test.ts). Started by
 * `node --import scripts/ts-register.mjs crash-import-child.ts <driver>`, it loads the
 * code, says `loaded`, reads a plan from stdin, opens the driver and the layer store
 * (the store's open finishes what an earlier kill left), says `opened`, then imports and
 * removes images, journaling `{"begin":i}` / `{"end":i}` synchronously: a line printed
 * is a step done.
 */
import { join } from 'node:path';
import { LayerStore } from '@cairnfs/image';
import { loadDriverFactory, readPlan, runChild, runJournaled, say } from '@cairnfs/testkit';

export type ImportCrashOp = { op: 'import'; path: string } | { op: 'remove'; ref: string } | { op: 'gc' };

export interface ImportCrashPlan {
  root: string;
  ops: ImportCrashOp[];
}

async function main(): Promise<void> {
  const name = process.argv[2] ?? 'overlay2';
  const factory = await loadDriverFactory(name);
  say('loaded');
  const plan = await readPlan<ImportCrashPlan>();
  const driver = await factory.open({ root: plan.root, home: join(plan.root, factory.name), options: {}, lockTimeoutMs: 5000 });
  const store = await LayerStore.open(driver);
  say({ opened: true });
  await runJournaled(plan.ops, async (op) => {
    if (op.op === 'import') await store.importImage(op.path);
    else if (op.op === 'remove') await store.removeImage(op.ref);
    else await store.gc();
  }, (op) => JSON.stringify(op));
  await driver.cleanup();
  say({ done: true });
}

runChild(main);
