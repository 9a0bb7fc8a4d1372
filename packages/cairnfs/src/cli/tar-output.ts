// Where export and diff write their tar: a file (-o), or stdout when it is not a terminal.
// A tar on a terminal is unreadable and can leave it in a bad state, so that is refused, as
// `docker save` does.
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { writeExportTo } from '@cairnfs/archive';
import { UsageError } from './context.js';

export const OUTPUT_FLAGS = '-o, --output <file>';

/** Fails before any work is done when the tar would go to a terminal. */
export function checkTarDestination(output: string | undefined, what: string): void {
  if (output === undefined && process.stdout.isTTY) {
    throw new UsageError(`refusing to write ${what} to a terminal: give -o FILE or redirect stdout (… > ${what.replace(/^an? /, '').replace(/ /g, '-')}.tar)`);
  }
}

/**
 * Streams the tar to its destination. A file is written under a temporary name in the
 * same directory and renamed when complete, so a failed export leaves no truncated tar
 * under the name asked for.
 */
export async function writeTar(tar: Readable, output: string | undefined): Promise<void> {
  if (output === undefined || output === '-') {
    await pipeline(tar, process.stdout);
    return;
  }
  const target = resolve(output);
  const temp = join(dirname(target), `.${basename(target)}.${process.pid}.partial`);
  try {
    // writeExportTo packs a layer or image export straight into two reused buffers (no fresh
    // buffer per chunk for V8 to collect: docs/benchmarks.md, "Issue 19: export chunk memory").
    const file = await open(temp, 'w', 0o644);
    try {
      await writeExportTo(tar, file.fd);
    } finally {
      await file.close();
    }
    await rename(temp, target);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}
