/**
 * The child side of the kill -9 harness (see crash.ts). Started by
 * `node --import scripts/ts-register.mjs crash-child.ts`, it loads the drivers, says
 * `loaded`, reads one plan from stdin, opens the home, says `opened`, then runs the ops
 * and journals `{"begin":i}` / `{"end":i}` on stdout so the parent knows what finished
 * before it killed us. Each line is written synchronously: a line printed is a step done.
 */
import { writeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { DriverFactory } from '@cairn/core';
import { layerTar } from './crash.js';
import type { CrashPlan } from './crash.js';

function say(msg: unknown): void {
  writeSync(1, (typeof msg === 'string' ? msg : JSON.stringify(msg)) + '\n');
}

async function readPlan(): Promise<CrashPlan> {
  let text = '';
  for await (const chunk of process.stdin) text += String(chunk);
  return JSON.parse(text) as CrashPlan;
}

async function loadFactory(name: string): Promise<DriverFactory> {
  const mod = (await import(`@cairn/${name}`)) as Record<string, unknown>;
  return mod[`${name}Driver`] as DriverFactory;
}

async function main(): Promise<void> {
  // Load the drivers before saying we are ready, so the kill clock starts on driver work.
  const name = process.argv[2] ?? 'vfs';
  const factory = await loadFactory(name);
  say('loaded');
  const plan = await readPlan();
  const driver = await factory.open({ root: plan.root, home: join(plan.root, factory.name), options: {}, lockTimeoutMs: 5000 });
  say({ opened: true });
  for (const [i, op] of plan.ops.entries()) {
    say({ begin: i });
    try {
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
    } catch (err) {
      say({ error: `${op.op} ${op.id}: ${String(err)}` });
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
