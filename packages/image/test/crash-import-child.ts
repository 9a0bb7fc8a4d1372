/**
 * The child side of the image import kill trials (crash-import.test.ts). Started by
 * `node --import scripts/ts-register.mjs crash-import-child.ts <driver>`, it loads the
 * code, says `loaded`, reads a plan from stdin, opens the driver and the layer store
 * (the store's open finishes what an earlier kill left), says `opened`, then imports and
 * removes images, journaling `{"begin":i}` / `{"end":i}` synchronously: a line printed
 * is a step done.
 */
import { writeSync } from 'node:fs';
import { join } from 'node:path';
import type { DriverFactory } from '@cairn/core';
import { LayerStore } from '@cairn/image';

export type ImportCrashOp = { op: 'import'; path: string } | { op: 'remove'; ref: string } | { op: 'gc' };

export interface ImportCrashPlan {
  root: string;
  ops: ImportCrashOp[];
}

function say(msg: unknown): void {
  writeSync(1, (typeof msg === 'string' ? msg : JSON.stringify(msg)) + '\n');
}

async function main(): Promise<void> {
  const name = process.argv[2] ?? 'overlay2';
  const factory = ((await import(`@cairn/${name}`)) as Record<string, unknown>)[`${name}Driver`] as DriverFactory;
  say('loaded');
  let text = '';
  for await (const chunk of process.stdin) text += String(chunk);
  const plan = JSON.parse(text) as ImportCrashPlan;
  const driver = await factory.open({ root: plan.root, home: join(plan.root, factory.name), options: {}, lockTimeoutMs: 5000 });
  const store = await LayerStore.open(driver);
  say({ opened: true });
  for (const [i, op] of plan.ops.entries()) {
    say({ begin: i });
    try {
      if (op.op === 'import') await store.importImage(op.path);
      else if (op.op === 'remove') await store.removeImage(op.ref);
      else await store.gc();
    } catch (err) {
      say({ error: `${JSON.stringify(op)}: ${String(err)}` });
      process.exit(1);
    }
    say({ end: i });
  }
  await driver.cleanup();
  say({ done: true });
}

main().catch((err: unknown) => {
  say({ error: String(err) });
  process.exit(1);
});
