/**
 * The child side of the kill -9 harnesses' line protocol (crash.ts reads it): `loaded`
 * once the code is in, the plan as JSON on stdin, `{"opened":true}` once the home is
 * open, then `{"begin":i}` / `{"end":i}` around each op, `{"done":true}` at the end and
 * `{"error":…}` (exit 1) on a failure. Every line is written synchronously: a line
 * printed is a step done, whenever the SIGKILL comes.
 */
import { writeSync } from 'node:fs';
import type { DriverFactory } from '@cairnfs/core';

export function say(msg: unknown): void {
  writeSync(1, (typeof msg === 'string' ? msg : JSON.stringify(msg)) + '\n');
}

/** The driver factory `@cairnfs/<name>` exports as `<name>Driver`. */
export async function loadDriverFactory(name: string): Promise<DriverFactory> {
  const mod = (await import(`@cairnfs/${name}`)) as Record<string, unknown>;
  return mod[`${name}Driver`] as DriverFactory;
}

/** Reads the whole of stdin as one JSON plan. */
export async function readPlan<T>(): Promise<T> {
  let text = '';
  for await (const chunk of process.stdin) text += String(chunk);
  return JSON.parse(text) as T;
}

/** Runs the ops in order, journaling each; the first failure is reported and ends the process. */
export async function runJournaled<Op>(ops: Op[], run: (op: Op) => Promise<void>, label: (op: Op) => string): Promise<void> {
  for (const [i, op] of ops.entries()) {
    say({ begin: i });
    try {
      await run(op);
    } catch (err) {
      say({ error: `${label(op)}: ${String(err)}` });
      process.exit(1);
    }
    say({ end: i });
  }
}

/** Runs a child's main, turning an escaped error into the protocol's error line. */
export function runChild(main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    say({ error: String(err) });
    process.exit(1);
  });
}
