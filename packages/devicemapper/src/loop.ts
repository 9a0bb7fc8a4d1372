import { classify, run } from './exec.js';

const PKG = 'util-linux (losetup)';

/** The loop device already attached to `file`, or null. */
export async function loopFor(file: string): Promise<string | null> {
  const { stdout } = await run('losetup', ['-n', '-O', 'NAME', '-j', file], PKG);
  return stdout.trim().split('\n')[0]?.trim() || null;
}

/** Attaches `file` to a free loop device (reusing one left attached by an earlier process). */
export async function attachLoop(file: string): Promise<string> {
  const existing = await loopFor(file);
  if (existing) return existing;
  try {
    const { stdout } = await run('losetup', ['-f', '--show', file], PKG);
    return stdout.trim();
  } catch (err) {
    throw classify(err, `attaching ${file} to a loop device`, file);
  }
}

/** Makes the loop device see its file's new size after the file grew. */
export async function refreshLoopCapacity(dev: string): Promise<void> {
  try {
    await run('losetup', ['-c', dev], PKG);
  } catch (err) {
    throw classify(err, `refreshing the size of ${dev}`, dev);
  }
}

export async function detachLoop(dev: string): Promise<void> {
  try {
    await run('losetup', ['-d', dev], PKG);
  } catch (err) {
    throw classify(err, `detaching ${dev}`, dev);
  }
}
