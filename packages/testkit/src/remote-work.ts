/**
 * Work loops a remote driver process runs on its own (remote-child.ts): a steady
 * `witness` while another process is being killed on the same root, and a random
 * `stress` mix. Both work on layers named with their own prefix (plus read-only use of
 * `shared` layers), check every outcome against their own model of what they made, time
 * every operation, and report instead of throwing, so the parent sees every failure.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { StorageDriver } from '@cairnfs/core';
import { layerTar, prng } from './crash.js';

export interface WorkReport {
  ops: number;
  /** What went wrong, in words; empty on success. */
  errors: string[];
  /** The slowest single operation, ms. */
  maxOpMs: number;
  /** Own layers that exist at the end (witness: none, it removes them). */
  layers: string[];
  /** Operations by name. */
  counts: Record<string, number>;
}

interface Own { parent: string | null; applied: boolean }

class Worker {
  readonly report: WorkReport = { ops: 0, errors: [], maxOpMs: 0, layers: [], counts: {} };
  readonly own = new Map<string, Own>();
  /** Layers this worker holds a get on, with how many. */
  readonly held = new Map<string, number>();
  private next = 0;

  constructor(readonly driver: StorageDriver, readonly prefix: string, readonly opTimeoutMs: number, readonly bytes: number) {}

  newId(): string {
    return `${this.prefix}-${this.next++}`;
  }

  /** Runs one operation, timed; a failure or an overlong wait is recorded, not thrown. */
  async op<T>(name: string, fn: () => Promise<T>): Promise<T | undefined> {
    const started = Date.now();
    try {
      return await fn();
    } catch (err) {
      this.report.errors.push(`${name}: ${(err as { code?: string }).code ?? ''} ${(err as Error).message}`);
      return undefined;
    } finally {
      const ms = Date.now() - started;
      this.report.ops++;
      this.report.counts[name.split(' ')[0]!] = (this.report.counts[name.split(' ')[0]!] ?? 0) + 1;
      this.report.maxOpMs = Math.max(this.report.maxOpMs, ms);
      if (ms > this.opTimeoutMs) this.report.errors.push(`${name} took ${ms} ms, past ${this.opTimeoutMs} ms`);
    }
  }

  check(ok: boolean, what: string): void {
    if (!ok) this.report.errors.push(what);
  }

  async create(parent: string | null, image: boolean): Promise<string | undefined> {
    const id = this.newId();
    const done = await this.op(`create ${id}`, async () => {
      if (image) await this.driver.create(id, parent);
      else await this.driver.createReadWrite(id, parent);
      return true;
    });
    if (!done) return undefined;
    this.own.set(id, { parent, applied: false });
    if (image) {
      const tar = layerTar(id, this.next * 7919, this.bytes, false);
      const applied = await this.op(`apply ${id}`, () => this.driver.applyDiff(id, parent, Readable.from([tar])));
      if (applied !== undefined) this.own.get(id)!.applied = true;
    }
    return id;
  }

  async get(id: string): Promise<string | undefined> {
    const path = await this.op(`get ${id}`, () => this.driver.get(id));
    if (path === undefined) return undefined;
    this.held.set(id, (this.held.get(id) ?? 0) + 1);
    const own = this.own.get(id);
    if (own?.applied) {
      const names = await readdir(join(path, `L-${id}`)).catch(() => [] as string[]);
      this.check(names.length > 3, `layer ${id} mounted at ${path} lacks its files (saw ${names.length})`);
    }
    return path;
  }

  async put(id: string): Promise<void> {
    const ok = await this.op(`put ${id}`, async () => { await this.driver.put(id); return true; });
    if (!ok) return;
    const left = (this.held.get(id) ?? 1) - 1;
    if (left > 0) this.held.set(id, left);
    else this.held.delete(id);
  }

  leaves(): string[] {
    const parents = new Set([...this.own.values()].map((l) => l.parent));
    return [...this.own.keys()].filter((id) => !parents.has(id) && !this.held.has(id));
  }

  async remove(id: string): Promise<void> {
    const ok = await this.op(`remove ${id}`, async () => { await this.driver.remove(id); return true; });
    if (ok) this.own.delete(id);
    const still = await this.op(`exists ${id}`, () => this.driver.exists(id));
    this.check(still === !ok, `layer ${id}: remove ${ok ? 'succeeded' : 'failed'} but exists says ${String(still)}`);
  }

  /** Puts every hold back and removes every own layer, leaves first. */
  async tidy(keep: number): Promise<void> {
    for (const [id, n] of [...this.held]) for (let i = 0; i < n; i++) await this.put(id);
    for (let leaves = this.leaves(); this.own.size > keep && leaves.length > 0; leaves = this.leaves()) await this.remove(leaves[0]!);
    this.report.layers = [...this.own.keys()].sort();
  }
}

export interface WitnessOptions {
  prefix: string;
  bytes: number;
  maxLayers: number;
  opTimeoutMs: number;
}

/**
 * Keeps working until stopped: one layer held (got) the whole time, a chain of its own
 * layers created, applied, mounted and removed around it. `stop()` ends the loop, puts
 * the held layer back, removes its layers and reports.
 */
export function runWitness(driver: StorageDriver, opts: WitnessOptions): { stop: () => Promise<WorkReport> } {
  const w = new Worker(driver, opts.prefix, opts.opTimeoutMs, opts.bytes);
  let stopping = false;
  const loop = (async () => {
    const pinned = await w.create(null, true);
    if (pinned !== undefined) await w.get(pinned);
    while (!stopping) {
      const chain = [...w.own.keys()].filter((id) => id !== pinned);
      if (chain.length < opts.maxLayers) {
        const id = await w.create(chain.at(-1) ?? null, chain.length % 2 === 0);
        if (id !== undefined) {
          await w.get(id);
          await w.put(id);
        }
      } else {
        const leaf = w.leaves()[0];
        if (leaf !== undefined) await w.remove(leaf);
      }
      if (pinned !== undefined) {
        const path = await w.op(`get ${pinned}`, () => driver.get(pinned));
        if (path !== undefined) await w.op(`put ${pinned}`, () => driver.put(pinned));
      }
    }
  })();
  return {
    async stop() {
      stopping = true;
      await loop;
      await w.tidy(0);
      return w.report;
    },
  };
}

export interface StressOptions {
  prefix: string;
  seconds: number;
  seed: number;
  /** Layers made by the parent that this worker may get and build on, never remove. */
  shared: string[];
  bytes: number;
  opTimeoutMs: number;
  /** Own layers to leave in place at the end (the parent checks the reopened store lists them). */
  keep: number;
}

/** Random operations for `seconds`: creates, applies, gets, puts, removes, diffs, status; then tidies up. */
export async function runStress(driver: StorageDriver, opts: StressOptions): Promise<WorkReport> {
  const w = new Worker(driver, opts.prefix, opts.opTimeoutMs, opts.bytes);
  const rnd = prng(opts.seed);
  const pick = <T>(xs: T[]): T | undefined => xs[Math.floor(rnd() * xs.length)];
  const until = Date.now() + opts.seconds * 1000;
  while (Date.now() < until) {
    const r = rnd();
    const applied = [...w.own].filter(([, l]) => l.applied).map(([id]) => id);
    if (r < 0.25 || w.own.size < 2) {
      const parent = rnd() < 0.4 ? pick(opts.shared) ?? null : rnd() < 0.5 ? pick(applied) ?? null : null;
      await w.create(parent, rnd() < 0.6);
    } else if (r < 0.45) {
      const id = rnd() < 0.3 ? pick(opts.shared) : pick([...w.own.keys()]);
      if (id !== undefined && w.held.size < 4) await w.get(id);
    } else if (r < 0.6) {
      const id = pick([...w.held.keys()]);
      if (id !== undefined) await w.put(id);
    } else if (r < 0.75) {
      const leaf = pick(w.leaves());
      if (leaf !== undefined && w.own.size > 1) await w.remove(leaf);
    } else if (r < 0.85) {
      const id = pick(applied);
      const parent = id === undefined ? undefined : w.own.get(id)!.parent;
      if (id !== undefined) {
        const changes = await w.op(`changes ${id}`, () => driver.changes(id, parent));
        if (changes !== undefined) w.check(changes.some((c) => c.path === `/L-${id}`), `changes of ${id} lack /L-${id}`);
      }
    } else if (r < 0.93) {
      const id = pick([...w.own.keys()]);
      if (id !== undefined) {
        const exists = await w.op(`exists ${id}`, () => driver.exists(id));
        w.check(exists === true, `own layer ${id} does not exist`);
      }
    } else {
      await w.op('status', () => driver.status());
    }
  }
  await w.tidy(opts.keep);
  return w.report;
}
