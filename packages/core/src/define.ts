import { readdir } from 'node:fs/promises';
import type { DriverContext, DriverFactory, ProbeResult, StorageDriver } from './driver.js';
import { CairnError, errnoCode, isCairnError } from './errors.js';

/** What a driver's probe and open see: the registry's context plus the driver's own options, already parsed. */
export interface DriverSetup<Options> extends DriverContext {
  /** `parseOptions(ctx.options)`: validated before anything is probed or created. */
  settings: Options;
}

/** A probe's answer; the registry fills in the driver's name and priority. */
export type ProbeVerdict = Omit<ProbeResult, 'name' | 'priority' | 'chosen' | 'prior'>;

/**
 * The one shape of a storage driver, as the registry sees it. Each built-in driver's
 * `index.ts` is a single `defineDriver({ … })`:
 *
 * - `parseOptions` turns the driver's own options (`overlay2.size`, `dm.basesize`, …: only
 *   those under its prefixes reach it) into a typed value, refusing unknown names and bad
 *   values with `ERR_INVALID_OPTION`. Pure: no I/O. It runs before `probe` and `open`, so
 *   a bad option is refused before anything is looked at or created.
 * - `probe` says whether the driver can run here and why not. It must not create or change
 *   anything. The factory's `open` probes first (unless handed a usable probe result) and
 *   refuses with the probe's code and reason, so `open` here only runs where `probe` said yes.
 * - `hasLayers` says whether `${root}/${name}` already holds layers (prior-driver rule).
 * - `open` returns a ready driver. The returned driver refuses every call after its
 *   `cleanup()` with `ERR_NOT_SUPPORTED` (see {@link guardAfterCleanup}); drivers need not.
 */
export interface DriverDefinition<Options> {
  readonly name: string;
  /** Lower is preferred: overlay2 1, btrfs 2, zfs 3, devicemapper 4, aufs 5, vfs 6. */
  readonly priority: number;
  /** Auto-selected only when the root's backing filesystem is the driver's own (btrfs, zfs). */
  readonly requiresOwnFilesystem?: boolean;
  /** Option-name prefixes this driver owns; default `[name]`. */
  readonly optionPrefixes?: readonly string[];
  /**
   * The factory's `open` works where `probe` says no (aufs: a Docker aufs store can be
   * listed, diffed, exported and migrated without the aufs kernel module; only get needs it).
   * The registry still never picks an unusable driver.
   */
  readonly opensWhenUnusable?: boolean;
  parseOptions(options: Readonly<Record<string, string>>): Options;
  probe(setup: DriverSetup<Options>): Promise<ProbeVerdict>;
  hasLayers(ctx: DriverContext): Promise<boolean>;
  open(setup: DriverSetup<Options>): Promise<StorageDriver>;
}

/** Turns a driver definition into the factory the registry takes. */
export function defineDriver<Options>(def: DriverDefinition<Options>): DriverFactory {
  const prefixes = def.optionPrefixes ?? [def.name];
  // Only the driver's own options reach parseOptions, also when a caller opens a factory directly.
  const ownOptions = (options: Readonly<Record<string, string>>) =>
    Object.fromEntries(Object.entries(options).filter(([key]) => prefixes.some((p) => key.startsWith(`${p}.`))));
  const setupOf = (ctx: DriverContext): DriverSetup<Options> => ({ ...ctx, settings: def.parseOptions(ownOptions(ctx.options)) });
  return {
    name: def.name,
    priority: def.priority,
    ...(def.requiresOwnFilesystem ? { requiresOwnFilesystem: true } : {}),
    ...(def.optionPrefixes ? { optionPrefixes: def.optionPrefixes } : {}),
    async probe(ctx: DriverContext): Promise<ProbeResult> {
      let setup: DriverSetup<Options>;
      try {
        setup = setupOf(ctx);
      } catch (err) {
        if (!isCairnError(err)) throw err;
        return { name: def.name, priority: def.priority, usable: false, code: err.code, reason: err.message };
      }
      return { ...await def.probe(setup), name: def.name, priority: def.priority };
    },
    hasLayers: (ctx: DriverContext) => def.hasLayers(ctx),
    async open(ctx: DriverContext, probed?: ProbeResult): Promise<StorageDriver> {
      const setup = setupOf(ctx);
      const verdict = probed?.usable || def.opensWhenUnusable ? { usable: true } : await def.probe(setup);
      if (!verdict.usable) {
        throw new CairnError(verdict.code ?? 'ERR_NOT_SUPPORTED',
          `${def.name} cannot run at ${ctx.home}: ${verdict.reason ?? 'its probe gave no reason'}`, { subject: ctx.home });
      }
      return guardAfterCleanup(await def.open(setup));
    },
  };
}

/**
 * The driver itself, except that once `cleanup()` has been called every method refuses
 * with `ERR_NOT_SUPPORTED` (and a second `cleanup()` does nothing). One rule for every
 * driver, kept here rather than as a flag checked at the top of each method of each driver.
 * The methods run on the driver object itself, so its own calls between its methods are
 * not affected (cleanup can still put and unmount).
 */
export function guardAfterCleanup<T extends StorageDriver>(driver: T): T {
  let cleaned = false;
  const refused = (method: string) => new CairnError('ERR_NOT_SUPPORTED',
    `the ${driver.name} driver on ${driver.home} was cleaned up; ${method}() needs a driver opened again (openDriver)`,
    { subject: driver.home });
  return new Proxy(driver, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || prop === 'constructor' || typeof prop === 'symbol') return value;
      const method = value as (...args: unknown[]) => unknown;
      if (prop === 'cleanup') {
        return async () => {
          if (cleaned) return;
          cleaned = true;
          await method.call(target);
        };
      }
      return (...args: unknown[]) => {
        if (cleaned) return Promise.reject(refused(prop));
        return method.apply(target, args);
      };
    },
  });
}

/**
 * True when `dir` has an entry that `isLayer` accepts; false when `dir` does not exist
 * (ENOENT/ENOTDIR). Any other error (EACCES, EIO) is not an answer and is thrown, so a
 * store that cannot be read is not mistaken for an empty one.
 */
export async function dirHasEntries(dir: string, isLayer: (name: string) => boolean = () => true): Promise<boolean> {
  try {
    return (await readdir(dir)).some(isLayer);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return false;
    throw err;
  }
}
