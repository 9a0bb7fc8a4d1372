import { isAbsolute, join, resolve } from 'node:path';
import { detectBackingFs } from './backingfs.js';
import type { DriverContext, DriverFactory, ProbeResult, StorageDriver } from './driver.js';
import { CairnError, isCairnError } from './errors.js';
import { ROOT_DIR_MODE, secureDir } from './securedir.js';
import { DEFAULT_LOCK_TIMEOUT_MS } from './storelock.js';

const DRIVER_NAME = /^[a-z0-9][a-z0-9_-]*$/;

/**
 * Option prefixes of moby's drivers, registered here or not. An option under one of
 * these that the chosen driver does not own is meant for another driver and is
 * ignored; an option under none of them is a typo and refused.
 */
const KNOWN_OPTION_PREFIXES = ['overlay2', 'overlay', 'btrfs', 'zfs', 'dm', 'devicemapper', 'aufs', 'vfs', 'fuse-overlayfs'];

/** The drivers cairn can open, by name. Most callers use {@link defaultRegistry}. */
export class Registry {
  private readonly factories = new Map<string, DriverFactory>();

  /** Adds a driver. Registering the same factory twice is a no-op; another factory under a taken name is an error. */
  register(factory: DriverFactory): void {
    if (!DRIVER_NAME.test(factory.name)) {
      throw new CairnError('ERR_INVALID_OPTION',
        `cannot register driver ${JSON.stringify(factory.name)}: a driver name is lower-case letters, digits, '_' and '-', since it names the driver's home directory`,
        { subject: factory.name });
    }
    const existing = this.factories.get(factory.name);
    if (existing === factory) return;
    if (existing) {
      throw new CairnError('ERR_INVALID_OPTION',
        `a driver named ${factory.name} is already registered; register each driver once`,
        { subject: factory.name });
    }
    this.factories.set(factory.name, factory);
  }

  get(name: string): DriverFactory | undefined {
    return this.factories.get(name);
  }

  /** Every registered driver, in auto-selection order: by priority, then name. */
  list(): DriverFactory[] {
    return [...this.factories.values()].sort((a, b) => a.priority - b.priority || a.name.localeCompare(b.name));
  }
}

/** The registry `openDriver` and `probe` use unless given another; the `cairn` package registers the built-in drivers here. */
export const defaultRegistry = new Registry();

export interface ProbeOptions {
  /** The storage root; each driver's home is `${root}/${name}`. Must be absolute. */
  root: string;
  /** Driver options named as moby names them (`overlay2.size`, `dm.basesize`, …). */
  options?: Record<string, string>;
  registry?: Registry;
}

export interface OpenOptions extends ProbeOptions {
  /** The driver to open; omitted = auto-select as moby does (see {@link openDriver}). */
  driver?: string;
  /**
   * Milliseconds an operation waits for a lock another process (or driver instance) holds
   * before ERR_LOCKED; default 30 000. Locks are taken per operation, never for the
   * driver's lifetime: any number of processes may open one root at once.
   */
  lockTimeoutMs?: number;
}

interface Setup {
  root: string;
  options: Record<string, string>;
  registry: Registry;
  lockTimeoutMs: number;
}

function checkSetup(opts: OpenOptions): Setup {
  if (typeof opts.root !== 'string' || !isAbsolute(opts.root)) {
    throw new CairnError('ERR_INVALID_OPTION',
      `root must be an absolute path, got ${JSON.stringify(opts.root)}; e.g. '/var/lib/cairn'`,
      { subject: String(opts.root) });
  }
  const registry = opts.registry ?? defaultRegistry;
  const options = opts.options ?? {};
  const prefixes = new Set(KNOWN_OPTION_PREFIXES);
  for (const f of registry.list()) for (const p of ownPrefixes(f)) prefixes.add(p);
  for (const [key, value] of Object.entries(options)) {
    if (typeof value !== 'string') {
      throw new CairnError('ERR_INVALID_OPTION', `option ${key} must be a string, got ${typeof value}`, { subject: key });
    }
    const dot = key.indexOf('.');
    if (dot <= 0 || !prefixes.has(key.slice(0, dot))) {
      throw new CairnError('ERR_INVALID_OPTION',
        `unknown option ${JSON.stringify(key)}: driver options are named <driver>.<option>, e.g. overlay2.size, btrfs.min_space, zfs.fsname, dm.basesize`,
        { subject: key });
    }
  }
  const lockTimeoutMs = opts.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  if (!Number.isFinite(lockTimeoutMs) || lockTimeoutMs < 0) {
    throw new CairnError('ERR_INVALID_OPTION', `lockTimeoutMs must be a number of milliseconds >= 0, got ${String(lockTimeoutMs)}`);
  }
  return { root: resolve(opts.root), options, registry, lockTimeoutMs };
}

function ownPrefixes(factory: DriverFactory): readonly string[] {
  return factory.optionPrefixes ?? [factory.name];
}

/** The context a factory sees: its home, and only the options under its own prefixes. */
function contextFor(factory: DriverFactory, setup: Setup): DriverContext {
  const prefixes = ownPrefixes(factory);
  const options: Record<string, string> = {};
  for (const [key, value] of Object.entries(setup.options)) {
    if (prefixes.some((p) => key.startsWith(`${p}.`))) options[key] = value;
  }
  return { root: setup.root, home: join(setup.root, factory.name), options, lockTimeoutMs: setup.lockTimeoutMs };
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A factory's probe, with a throwing probe turned into an unusable result so one broken driver cannot hide the others. */
async function probeFactory(factory: DriverFactory, ctx: DriverContext): Promise<ProbeResult> {
  let result: ProbeResult;
  try {
    result = await factory.probe(ctx);
  } catch (err) {
    result = {
      name: factory.name,
      priority: factory.priority,
      usable: false,
      reason: `probing ${factory.name} failed: ${messageOf(err)}`,
      ...(isCairnError(err) ? { code: err.code } : {}),
    };
  }
  // The registry is the authority on name and priority; backingFs is filled in when the driver left it out.
  const backingFs = result.backingFs ?? await detectBackingFs(ctx.home).then((fs) => fs.name, () => undefined);
  return { ...result, name: factory.name, priority: factory.priority, ...(backingFs === undefined ? {} : { backingFs }) };
}

/** Why a usable driver is still not picked automatically (btrfs on extfs), or null. */
function ownFilesystemRule(factory: DriverFactory, result: ProbeResult): string | null {
  if (!factory.requiresOwnFilesystem || result.backingFs === factory.name) return null;
  return `not chosen automatically: the backing filesystem is ${result.backingFs ?? 'unknown'}, and ${factory.name} is auto-selected only on ${factory.name}; pass driver: '${factory.name}' to use it anyway`;
}

async function priorDrivers(setup: Setup): Promise<DriverFactory[]> {
  const found: DriverFactory[] = [];
  for (const factory of setup.registry.list()) {
    if (await factory.hasLayers(contextFor(factory, setup))) found.push(factory);
  }
  return found;
}

function multiplePriorError(root: string, priors: DriverFactory[]): CairnError {
  const names = priors.map((f) => f.name);
  return new CairnError('ERR_MULTIPLE_PRIOR_DRIVERS',
    `${root} holds layers of more than one driver (${names.join(', ')}): pass driver explicitly to choose one, ` +
    `or remove the homes of the drivers you do not use (${names.map((n) => join(root, n)).join(', ')})`,
    { subject: root });
}

function unusableError(result: ProbeResult, home: string, prior: boolean): CairnError {
  const why = result.reason ?? 'its probe gave no reason';
  const message = prior
    ? `driver ${result.name} holds layers in ${home} but cannot be used now: ${why}. ` +
      `Fix that, or pass driver explicitly to use another one (the layers in ${home} will not be visible to it)`
    : `driver ${result.name} cannot be used at ${home}: ${why}`;
  return new CairnError(result.code ?? 'ERR_NOT_SUPPORTED', message, { subject: home });
}

/**
 * Opens a storage driver on `root`, as moby's graphdriver.New does:
 * - `driver` given: that driver, or ERR_DRIVER_NOT_FOUND; if its probe says no, the
 *   probe's reason with its code (ERR_NOT_SUPPORTED / ERR_INCOMPATIBLE_FS / ERR_PREREQUISITES).
 * - otherwise a *prior* driver wins: the one `${root}/<name>` that holds layers. If
 *   several do, ERR_MULTIPLE_PRIOR_DRIVERS; if it can no longer run, its error, never a
 *   silent switch to another driver that would not see those layers.
 * - otherwise the first usable driver by priority, skipping drivers that require their
 *   own filesystem (btrfs, zfs) unless the home is on it.
 * The driver returned holds no lock: each of its operations locks what it needs, waiting
 * up to `lockTimeoutMs` for other processes (ERR_LOCKED after that).
 * The root is created 0711, or tightened to 0711, as moby's; a root or home owned by
 * another user is refused with ERR_INVALID_OPTION (secureDir in @cairnfs/core).
 */
export async function openDriver(opts: OpenOptions): Promise<StorageDriver> {
  const setup = checkSetup(opts);
  await secureDir(setup.root, ROOT_DIR_MODE, 'storage root');

  if (opts.driver !== undefined) {
    const factory = setup.registry.get(opts.driver);
    if (!factory) {
      const known = setup.registry.list().map((f) => f.name);
      throw new CairnError('ERR_DRIVER_NOT_FOUND',
        `no storage driver named ${JSON.stringify(opts.driver)}; registered drivers: ${known.length ? known.join(', ') : '(none)'}`,
        { subject: opts.driver });
    }
    const ctx = contextFor(factory, setup);
    const result = await probeFactory(factory, ctx);
    if (!result.usable) throw unusableError(result, ctx.home, false);
    return factory.open(ctx, result);
  }

  const priors = await priorDrivers(setup);
  if (priors.length > 1) throw multiplePriorError(setup.root, priors);
  if (priors.length === 1) {
    const factory = priors[0]!;
    const ctx = contextFor(factory, setup);
    const result = await probeFactory(factory, ctx);
    if (!result.usable) throw unusableError(result, ctx.home, true);
    return factory.open(ctx, result);
  }

  const refusals: string[] = [];
  for (const factory of setup.registry.list()) {
    const ctx = contextFor(factory, setup);
    const result = await probeFactory(factory, ctx);
    const refusal = result.usable ? ownFilesystemRule(factory, result) : (result.reason ?? 'unusable');
    if (refusal === null) return factory.open(ctx, result);
    refusals.push(`${factory.name}: ${refusal}`);
  }
  throw new CairnError('ERR_NOT_SUPPORTED',
    refusals.length
      ? `no storage driver can run at ${setup.root}: ${refusals.join('; ')}`
      : `no storage drivers are registered; import 'cairnfs' (which registers the built-in drivers) or register one`,
    { subject: setup.root });
}

/**
 * Probes every registered driver for `root` without opening any, in priority order:
 * whether each can run (`usable`, with a `reason` and `code` when not), which one
 * {@link openDriver} would pick (`chosen`), which homes already hold layers (`prior`),
 * and for every driver not chosen, why.
 */
export async function probe(opts: ProbeOptions): Promise<ProbeResult[]> {
  const setup = checkSetup(opts);
  const factories = setup.registry.list();
  const results: ProbeResult[] = [];
  for (const factory of factories) results.push(await probeFactory(factory, contextFor(factory, setup)));
  const priors = new Set((await priorDrivers(setup)).map((f) => f.name));
  for (const r of results) r.prior = priors.has(r.name);

  let chosen: string | null = null;
  let verdict: (r: ProbeResult, f: DriverFactory) => string | undefined;
  if (priors.size > 1) {
    const note = multiplePriorError(setup.root, factories.filter((f) => priors.has(f.name))).message;
    verdict = (r) => (r.usable ? note : r.reason);
  } else if (priors.size === 1) {
    const [priorName] = priors;
    const prior = results.find((r) => r.name === priorName)!;
    if (prior.usable) chosen = prior.name;
    verdict = (r) => {
      if (r.name === priorName) return r.usable ? undefined : unusableError(r, join(setup.root, r.name), true).message;
      return r.usable ? `usable, but ${join(setup.root, priorName!)} already holds layers, so ${priorName} is used` : r.reason;
    };
  } else {
    for (const r of results) {
      const f = factories.find((x) => x.name === r.name)!;
      if (r.usable && ownFilesystemRule(f, r) === null) { chosen = r.name; break; }
    }
    verdict = (r, f) => {
      if (r.name === chosen) return undefined;
      if (!r.usable) return r.reason;
      return ownFilesystemRule(f, r) ?? `usable, but ${chosen} comes first by priority`;
    };
  }
  return results.map((r, i) => {
    const reason = verdict(r, factories[i]!);
    const { reason: _drop, ...rest } = r;
    return { ...rest, chosen: r.name === chosen, ...(reason === undefined ? {} : { reason }) };
  });
}
