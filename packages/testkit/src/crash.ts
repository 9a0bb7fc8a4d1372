import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { StoreLocks, isOwnerAlive, readMountInfo } from '@cairnfs/core';
import { applyLayer, encodeHeader, tarTrailer } from '@cairnfs/archive';
import type { DriverFactory, StorageDriver } from '@cairnfs/core';
import { constants as sysConstants, umount2 } from '@cairnfs/sys';
import { RemoteDriver } from './remote.js';

/**
 * Crash consistency by SIGKILL: a child process runs a plan of driver operations
 * (create / applyDiff / createReadWrite / remove / get+put) on a home, the parent kills
 * it at a random moment, reopens the home in-process and checks what the contract
 * promises: no layer that did not finish is visible, every finished layer is intact
 * (tree hash equal to a reference built with plain applyLayer), nothing is left in
 * .staging/.trash, no mount survives open + cleanup, and the store opens without help.
 *
 * Everything random comes from one seed per run; a failure names the seed and trial.
 */

/** A small deterministic PRNG (mulberry32): same seed, same plan, same tars, same kill times. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type CrashOp =
  | { op: 'create'; id: string; parent: string | null }
  | { op: 'apply'; id: string; seed: number; bytes: number; whiteout: boolean }
  | { op: 'createRW'; id: string; parent: string | null }
  | { op: 'remove'; id: string }
  | { op: 'mount'; id: string };

/** What the child is told on stdin. */
export interface CrashPlan {
  driver: string;
  root: string;
  /** Driver options the child opens the home with (the same the parent reopens it with). */
  options?: Record<string, string>;
  ops: CrashOp[];
}

/**
 * The tar a layer gets: files under its own directory, overwrites of shared files, a
 * symlink, a hardlink and a whiteout of a shared file, all derived from `seed`. About
 * `bytes` bytes of file content in total.
 */
export function layerTar(id: string, seed: number, bytes: number, whiteout = true): Buffer {
  const rnd = prng(seed);
  const parts: Buffer[] = [];
  const add = (h: Parameters<typeof encodeHeader>[0], body?: Buffer): void => {
    parts.push(encodeHeader(h));
    if (body) parts.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
  };
  const content = (n: number): Buffer => {
    // A random 64-byte pattern repeated: content differs per seed without 64K PRNG calls.
    const unit = Buffer.from(Array.from({ length: 64 }, () => Math.floor(rnd() * 256)));
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i += 64) unit.copy(b, i);
    return b;
  };
  const mtimeNs = 1_600_000_000_000_000_000n;
  add({ name: 'common/', type: 'dir', mode: 0o755, mtimeNs });
  add({ name: `L-${id}/`, type: 'dir', mode: 0o755, mtimeNs });
  const files = 4 + Math.floor(rnd() * 6);
  let left = bytes;
  for (let i = 0; i < files; i++) {
    const n = i === files - 1 ? Math.max(left, 0) : Math.floor(rnd() * (2 * bytes / files));
    left -= n;
    const body = content(Math.max(0, n));
    add({ name: `L-${id}/f${i}`, type: 'file', mode: 0o644, size: body.length, mtimeNs }, body);
  }
  const shared = Math.floor(rnd() * 4);
  const sbody = Buffer.from(`${id} wrote common/s${shared}\n`);
  add({ name: `common/s${shared}`, type: 'file', mode: 0o600, size: sbody.length, mtimeNs }, sbody);
  // Only layers whose parent has common/ get a whiteout: overlayfs lists a whiteout in a
  // directory no lower layer has (an overlay2 defect, see docs/reliability.md).
  if (whiteout) add({ name: `common/.wh.s${(shared + 1) % 4}`, type: 'file', mode: 0o600, size: 0, mtimeNs });
  add({ name: `L-${id}/link`, type: 'symlink', mode: 0o777, linkname: 'f0', mtimeNs });
  add({ name: `L-${id}/hard`, type: 'hardlink', mode: 0o644, linkname: `L-${id}/f0`, mtimeNs });
  parts.push(tarTrailer());
  return Buffer.concat(parts);
}

/**
 * A hash of what a tree holds: paths, types, permission bits, file contents, symlink
 * targets. Times are left out (overlay's merged view and copies differ there by design).
 */
export async function treeHash(dir: string): Promise<string> {
  const h = createHash('sha256');
  async function visit(rel: string): Promise<void> {
    const abs = rel === '' ? dir : join(dir, rel);
    const st = await lstat(abs);
    const kind = st.isDirectory() ? 'd' : st.isFile() ? 'f' : st.isSymbolicLink() ? 'l' : 'o';
    h.update(`${rel}\0${kind}\0${(st.mode & 0o7777).toString(8)}\0`);
    if (kind === 'f') h.update(createHash('sha256').update(await readFile(abs)).digest());
    if (kind === 'l') h.update(await readlink(abs));
    if (kind === 'd') for (const name of (await readdir(abs)).sort()) await visit(rel === '' ? name : `${rel}/${name}`);
  }
  await visit('');
  return h.digest('hex').slice(0, 16);
}

/** The parent's idea of one layer: where its reference tree is and that tree's hash. */
interface ModelLayer {
  parent: string | null;
  ref: string;
  hash: string;
  /** A layer that has children or was applied cannot take another applyDiff in vfs; only leaves get removed. */
  applied: boolean;
}

export interface CrashRunOptions {
  factory: DriverFactory;
  /** Driver options for every open, child and parent alike (e.g. devicemapper's small loop pool). Default {}. */
  options?: Record<string, string>;
  trials: number;
  seed: number;
  /** Content bytes per applied layer. */
  bytes?: number;
  /** Most layers the store holds at once (plans remove leaves beyond that). */
  maxLayers?: number;
  /** Driver-specific listing of the layer ids present on disk, to find orphans. */
  listOnDisk: (home: string) => Promise<string[]>;
  /** Share of trials killed while the child opens the home (recovery, probes). Default 0.1. */
  openKillShare?: number;
  /**
   * A known, reported defect to step around so the rest is still proven: paths under the
   * home it leaves behind. They are counted in the report, unmounted and deleted.
   */
  knownDefect?: (home: string) => Promise<string[]>;
  /**
   * When true, a layer whose applyDiff was killed may hold a partly applied tree (a
   * known, reported defect): it is counted in `partialApplies` and removed, instead of
   * failing the run. Default false: applyDiff must be all or nothing.
   */
  tolerateTornApply?: boolean;
  /**
   * Where the run's home and reference trees go (default os.tmpdir()). A tmpfs keeps
   * trials fast: SIGKILL does not lose the page cache, so fsync costs nothing here.
   */
  base?: string;
  /**
   * First guess (ms) of how long a plan runs after open, and of an open; kill times are
   * drawn below them and they follow measured plans from then on. Default 150 and 60,
   * right for vfs/overlay2 on tmpfs; slow backends (zfs) start higher. Until a plan
   * finishes the window grows by a quarter per trial, so a low guess corrects itself.
   */
  planMs?: number;
  openMs?: number;
  /**
   * How long one step of a trial (the child starting, one journal line, the child's exit
   * after the kill, the reopen, the checks, the cleanup) may take before the run fails as
   * a hang, naming the step and listing the processes still around (default 120 s).
   */
  stepDeadlineMs?: number;
  /** Called with a line of progress every 50 trials. */
  log?: (line: string) => void;
  /**
   * Runs a second, live process on the same root for the whole run (a "witness": see
   * remote-work.ts): it keeps creating, applying, mounting and removing its own layers
   * (`w-…`) and holds one mounted throughout, while the victim is killed around it and
   * the home reopened after every kill. Every witness operation must succeed, none may
   * wait past its lock timeout, and its mounts must survive every reopen and cleanup.
   */
  witness?: boolean;
}

export interface CrashRunReport {
  trials: number;
  /** Kills that landed while the child was opening (recovery) or running a given op. */
  killedDuring: Record<string, number>;
  /** Trials after which `knownDefect` found leftovers (cleaned up by the harness). */
  knownDefectHits: number;
  /** Layers left half-applied by a kill (only with `tolerateTornApply`). */
  partialApplies: number;
  /** Trials whose child finished its plan before the kill. */
  finished: number;
  millis: number;
  /** Operations the witness process ran (0 without one). */
  witnessOps?: number;
}

/**
 * Trials whose kill landed inside a plan (in an operation or between two), not during the
 * open or after the plan finished: what makes the trials worth running. A share of plans
 * finishing first is not the measure: the quickest plans (a remove, a create) end before
 * any kill a loaded machine's timers can place (101 of 200 finished in one CI run).
 */
export function killedInsidePlans(report: CrashRunReport): number {
  return report.trials - report.finished - (report.killedDuring['open'] ?? 0);
}

const here = dirname(fileURLToPath(import.meta.url));

/**
 * What belongs to the witness process (layers `w-<n>`, and staging, trash or subvolume
 * names made from them): left alone by the checks, the witness checks its own. Model
 * layers are `t<trial>-<n>`, which never match.
 */
const isWitnessId = (name: string): boolean => /(^|[/.-])w-\d/.test(name);
const isWitnessPath = (path: string): boolean => path.split('/').some(isWitnessId);

const repoRoot = join(here, '..', '..', '..');
const CHILD = join(here, 'crash-child.ts');
const REGISTER = join(repoRoot, 'scripts', 'ts-register.mjs');


/**
 * Starts `node script.ts ...args` running the current TypeScript sources (through
 * scripts/ts-register.mjs), stdin and stdout piped, stderr shared: the child side of a
 * kill harness. Other kill harnesses (image import) use it with their own child script.
 * The child leads its own process group, so {@link killChild} takes its helpers along.
 */
export function spawnTsChild(script: string, args: string[]): CrashChild {
  const proc = spawn(process.execPath, ['--import', REGISTER, script, ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, NODE_OPTIONS: '' },
    detached: true,
  });
  const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return { proc, lines, exited };
}

/** A child of {@link spawnTsChild}: its process, its stdout as lines, and when it is gone. */
export interface CrashChild {
  proc: ChildProcess;
  lines: AsyncIterator<string>;
  exited: Promise<void>;
}

type Warm = CrashChild;

/**
 * SIGKILL to the child's whole process group: the process and every helper it started
 * (the zfs driver runs `zfs`/`zpool` processes) die together, as under systemd's
 * KillMode=control-group. Killing only the node process let a `zfs destroy` it had
 * started finish after the parent had reopened the home and read the layer table, so a
 * layer listed by the new driver vanished under it (zfs kill trial, seed 495389560).
 */
export function killChild(child: CrashChild): void {
  try {
    if (child.proc.pid !== undefined) process.kill(-child.proc.pid, 'SIGKILL');
  } catch {
    child.proc.kill('SIGKILL'); // the group is gone already, or was never made
  }
}

function spawnWarm(driver: string): Warm {
  return spawnTsChild(CHILD, [driver]);
}

/** The child's next stdout line, or null once its stdout closed (it exited or was killed). */
export async function nextLine(w: CrashChild): Promise<string | null> {
  const r = await w.lines.next();
  return r.done ? null : r.value;
}

/**
 * The child's first stdout line, 'no answer' when it exits without one, or 'blocked' when
 * none comes within `ms` (the child is then killed): for a child whose work would hang for
 * ever if the code under test opened a fifo.
 */
export async function lineWithin(child: CrashChild, ms: number): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'blocked'>((resolve) => { timer = setTimeout(() => resolve('blocked'), ms); });
  try {
    const answer = await Promise.race([nextLine(child).then((l) => l ?? 'no answer'), deadline]);
    if (answer === 'blocked') killChild(child);
    return answer;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * What could hold a trial up: the child's process group and any storage tool still
 * running, with their state and kernel wait channel (a `D` in a fuse or dm wait is a
 * process SIGKILL cannot end until the daemon answers).
 */
function processesAround(child: CrashChild): string {
  try {
    const out = execFileSync('ps', ['-eo', 'pid,pgid,stat,wchan:24,etimes,args'], { encoding: 'utf8' });
    const pgid = String(child.proc.pid ?? -1);
    const lines = out.split('\n');
    const keep = lines.slice(1).filter((l) => {
      const f = l.trim().split(/\s+/);
      return f[1] === pgid || /\b(zfs|zpool|zfs-fuse|dmsetup|lvm|btrfs|mount|umount|fusermount)\b/.test(f.slice(5).join(' '));
    });
    return [lines[0], ...keep].join('\n');
  } catch (err) {
    return `(ps failed: ${String(err)})`;
  }
}

/** Runs `trials` kill -9 trials on one home and throws (naming seed and trial) on the first broken promise. */
export async function runCrashTrials(opts: CrashRunOptions): Promise<CrashRunReport> {
  const started = Date.now();
  const bytes = opts.bytes ?? 32 * 1024;
  const maxLayers = opts.maxLayers ?? 6;
  const work = await mkdtemp(join(opts.base ?? tmpdir(), `cairn-crash-${opts.factory.name}-`));
  const root = join(work, 'root');
  const refs = join(work, 'refs');
  await mkdir(root);
  await mkdir(refs);
  const emptyRef = join(refs, 'empty');
  await mkdir(emptyRef);
  const emptyHash = await treeHash(emptyRef);
  const model = new Map<string, ModelLayer>();
  const report: CrashRunReport = { trials: 0, killedDuring: {}, knownDefectHits: 0, partialApplies: 0, finished: 0, millis: 0 };
  const rnd = prng(opts.seed);
  let nextId = 0;
  let planMsEstimate = opts.planMs ?? 150;
  let openMsEstimate = opts.openMs ?? 60;
  // The kill window's share of a plan's average length, steered so that about three plans
  // in ten finish before their kill on any machine: plans differ in length, so a window of
  // the whole average let over half of them finish once the driver's operations got faster
  // (111 of 200 in one CI run). A finished plan shrinks it by 7 %, a killed one widens it by
  // 3 % (an equilibrium at 29 % finished).
  let windowShare = 1;
  let warm = spawnWarm(opts.factory.name);
  const witness = opts.witness
    ? await RemoteDriver.start(opts.factory.name, root, { options: opts.options ?? {}, lockTimeoutMs: 10_000 })
    : null;
  await witness?.startWitness({ prefix: 'w', bytes: Math.min(bytes, 16 * 1024), maxLayers: 3, opTimeoutMs: 10_000 });
  const storeLocks = witness ? new StoreLocks(join(root, opts.factory.name), { timeoutMs: 10_000, what: 'store' }) : null;
  const fail = (trial: number, what: string): never => {
    throw new Error(`crash trial ${trial} of ${opts.factory.name} (CAIRN_CRASH_SEED=${opts.seed}): ${what}`);
  };
  const deadlineMs = opts.stepDeadlineMs ?? 120_000;
  // A hang fails the trial with what was waited for and what is still running, instead
  // of running into the test timeout with nothing to go on.
  const within = async <T>(trial: number, step: string, child: CrashChild, work: Promise<T>): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    const hang = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        try { fail(trial, `${step} took over ${deadlineMs} ms (a hang?); processes:\n${processesAround(child)}`); } catch (err) { reject(err); }
      }, deadlineMs);
    });
    try {
      return await Promise.race([work, hang]);
    } finally {
      clearTimeout(timer);
    }
  };
  try {
    for (let trial = 0; trial < opts.trials; trial++) {
      const ops = makePlan(rnd, model, maxLayers, () => `t${trial}-${nextId++}`, bytes);
      const child = warm;
      if ((await within(trial, 'the child starting', child, nextLine(child))) !== 'loaded') fail(trial, 'child did not start');
      warm = spawnWarm(opts.factory.name);
      const plan: CrashPlan = { driver: opts.factory.name, root, options: opts.options ?? {}, ops };
      child.proc.stdin!.end(JSON.stringify(plan) + '\n');
      const t0 = Date.now();
      const killEarly = rnd() < (opts.openKillShare ?? 0.1);
      const delay = Math.floor(rnd() * (killEarly ? openMsEstimate : windowShare * planMsEstimate));
      // Follow the child's journal until the kill time.
      const begun = new Set<number>();
      const ended = new Set<number>();
      let opened = false;
      let done = false;
      let openedAt = 0;
      let killTimer: NodeJS.Timeout | undefined;
      const kill = (): void => { killChild(child); };
      if (killEarly) killTimer = setTimeout(kill, delay);
      for (;;) {
        const line = await within(trial, `the child's next journal line (ops ${JSON.stringify(ops)}, kill at ${delay} ms)`, child, nextLine(child));
        if (line === null) break;
        const msg = JSON.parse(line) as { opened?: true; begin?: number; end?: number; error?: string; done?: true };
        if (msg.opened) {
          opened = true;
          openedAt = Date.now();
          openMsEstimate = 0.8 * openMsEstimate + 0.2 * (openedAt - t0);
          if (!killEarly) killTimer = setTimeout(kill, delay);
        }
        if (msg.begin !== undefined) begun.add(msg.begin);
        if (msg.end !== undefined) ended.add(msg.end);
        if (msg.error !== undefined) fail(trial, `the child's own operation failed: ${msg.error}`);
        if (msg.done) {
          done = true;
          planMsEstimate = 0.8 * planMsEstimate + 0.2 * (Date.now() - openedAt);
        }
      }
      // Until a plan finishes there is no measure of its length: stretch the window, or a
      // first guess that is too short would keep every kill in the first op for good.
      if (!done && opened && !killEarly && report.finished === 0) planMsEstimate *= 1.25;
      if (opened && !killEarly) windowShare *= done ? 0.93 : 1.03;
      clearTimeout(killTimer);
      await within(trial, 'the killed child exiting', child, child.exited);
      report.trials++;
      const inflight = [...begun].find((i) => !ended.has(i));
      if (done) report.finished++;
      const where = !opened ? 'open' : inflight !== undefined ? ops[inflight]!.op : done ? 'finished' : 'between ops';
      report.killedDuring[where] = (report.killedDuring[where] ?? 0) + 1;

      // Reopen and hold the store to its promises.
      let driver: StorageDriver;
      try {
        driver = await within(trial, `the reopen after a kill during ${where}`, child,
          opts.factory.open({ root, home: join(root, opts.factory.name), options: opts.options ?? {}, lockTimeoutMs: 5000 }));
      } catch (err) {
        return fail(trial, `the store did not reopen after the kill (${where}): ${String(err)}`);
      }
      const checks = async (): Promise<void> => {
        for (const [i, op] of ops.entries()) {
          if (!begun.has(i)) break;
          await settle(op, ended.has(i), driver, model, refs, emptyRef, emptyHash, opts.tolerateTornApply ? report : null, (what) => fail(trial, `${what} (killed during ${where}, op ${i} ${JSON.stringify(op)})`));
        }
        for (const [id, layer] of model) {
          if (!(await driver.exists(id))) fail(trial, `finished layer ${id} is gone after a kill during ${where}`);
          const path = await driver.get(id);
          const hash = await treeHash(path).finally(() => driver.put(id));
          if (hash !== layer.hash) fail(trial, `finished layer ${id} changed after a kill during ${where}: tree hash ${hash}, expected ${layer.hash}`);
        }
        const home = join(root, opts.factory.name);
        // With a witness at work, look under the store's read lock: no create of its is half made then.
        const list = () => opts.listOnDisk(home);
        const listed = storeLocks ? await storeLocks.read('list the layers on disk', list) : await list();
        const onDisk = listed.filter((id) => !isWitnessId(id)).sort();
        const expected = [...model.keys()].sort();
        if (JSON.stringify(onDisk) !== JSON.stringify(expected)) fail(trial, `layers on disk ${JSON.stringify(onDisk)} differ from finished layers ${JSON.stringify(expected)} (orphans or losses) after a kill during ${where}`);
        for (const sub of ['.staging', '.trash']) {
          // A live process's work in progress (the witness's) is not a leftover.
          const left = (await readdir(join(home, sub)).catch(() => [])).filter((n) => !isOwnerAlive(n));
          if (left.length > 0) fail(trial, `${sub} still holds ${left.join(', ')} after reopening (kill during ${where})`);
        }
      };
      try {
        await within(trial, `the checks after a kill during ${where}`, child, checks());
      } finally {
        await within(trial, `the cleanup after a kill during ${where}`, child, driver.cleanup());
      }
      const home = join(root, opts.factory.name);
      const known = opts.knownDefect ? await opts.knownDefect(home) : [];
      if (known.length > 0) {
        report.knownDefectHits++;
        for (const path of known) await detachUnder(path);
        for (const path of known) await rm(path, { recursive: true, force: true });
      }
      const mounts = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${home}/`) && !isWitnessPath(m.mountPoint));
      if (mounts.length > 0) fail(trial, `mounts left after reopen + cleanup: ${mounts.map((m) => m.mountPoint).join(', ')}`);
      if (witness && !(await witnessAlive(witness))) fail(trial, 'the witness process died');
      if (opts.log && (trial + 1) % 50 === 0) opts.log(`${opts.factory.name}: ${trial + 1} kill trials, ${model.size} layers, ${Date.now() - started} ms`);
    }
    if (witness) {
      const w = await witness.stopWitness();
      report.witnessOps = w.ops;
      if (w.errors.length > 0) throw new Error(`crash trials of ${opts.factory.name} (CAIRN_CRASH_SEED=${opts.seed}): the witness process failed: ${w.errors.slice(0, 5).join('; ')}`);
      if (w.ops === 0) throw new Error('the witness process did no work');
      await witness.exit();
    }
  } finally {
    await storeLocks?.close();
    witness?.kill();
    await witness?.exited;
    killChild(warm);
    await warm.exited;
    // Never let tidying up hide the failure that brought us here.
    await cleanupStore(opts.factory, root, opts.listOnDisk, opts.options ?? {}).catch(() => undefined);
    await detachUnder(work).catch(() => undefined);
    await rm(work, { recursive: true, force: true }).catch(() => undefined);
  }
  report.millis = Date.now() - started;
  return report;
}

/** True while the witness process runs and answers. */
async function witnessAlive(witness: RemoteDriver): Promise<boolean> {
  return Promise.race([
    witness.call('exists', 'w-0').then(() => true, (err: unknown) => (err as { code?: string }).code !== 'EXITED'),
    witness.exited.then(() => false),
  ]);
}

/** Brings the model in line with one op the child began: finished ops must show, an interrupted one may or may not. */
async function settle(
  op: CrashOp, finished: boolean, driver: StorageDriver, model: Map<string, ModelLayer>,
  refs: string, emptyRef: string, emptyHash: string, torn: CrashRunReport | null, fail: (what: string) => never,
): Promise<void> {
  switch (op.op) {
    case 'create':
    case 'createRW': {
      const exists = await driver.exists(op.id);
      if (finished && !exists) fail(`layer ${op.id} was created but does not exist`);
      if (exists) {
        const parent = op.parent === null ? null : model.get(op.parent)!;
        model.set(op.id, { parent: op.parent, ref: parent?.ref ?? emptyRef, hash: parent?.hash ?? emptyHash, applied: false });
      }
      return;
    }
    case 'apply': {
      const layer = model.get(op.id);
      if (!layer) return; // its create was interrupted; the apply never started for real
      const ref = join(refs, op.id);
      await cp(layer.ref, ref, { recursive: true, verbatimSymlinks: true });
      await applyLayer(ref, Readable.from([layerTar(op.id, op.seed, op.bytes, op.whiteout)]), { whiteouts: 'delete' });
      const after = await treeHash(ref);
      const path = await driver.get(op.id);
      const now = await treeHash(path).finally(() => driver.put(op.id));
      if (now === after) {
        Object.assign(layer, { ref, hash: after, applied: true });
      } else if (torn && !finished && now !== layer.hash) {
        torn.partialApplies++;
        await driver.remove(op.id);
        model.delete(op.id);
        await rm(ref, { recursive: true, force: true });
      } else if (finished || now !== layer.hash) {
        fail(`layer ${op.id} holds neither its old tree (${layer.hash}) nor the applied one (${after}) but ${now}${finished ? ' although applyDiff finished' : ''}`);
      } else {
        await rm(ref, { recursive: true, force: true });
        layer.applied = true; // half-applied layers are left alone from now on
      }
      return;
    }
    case 'remove': {
      const exists = await driver.exists(op.id);
      if (finished && exists) fail(`layer ${op.id} was removed but still exists`);
      if (!exists) model.delete(op.id);
      return;
    }
    case 'mount':
      return;
  }
}

/** The next plan: grow the store while it is small, shrink it (leaves first) when it is full. */
function makePlan(rnd: () => number, model: Map<string, ModelLayer>, maxLayers: number, newId: () => string, bytes: number): CrashOp[] {
  const ops: CrashOp[] = [];
  const ids = [...model.keys()];
  const leaves = ids.filter((id) => ![...model.values()].some((l) => l.parent === id));
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const removed = new Set<string>();
  if (model.size >= maxLayers || (leaves.length > 0 && rnd() < 0.3)) {
    const victim = pick(leaves);
    ops.push({ op: 'remove', id: victim });
    removed.add(victim);
  }
  if (ids.length > 0 && rnd() < 0.3) {
    const candidates = ids.filter((i) => !removed.has(i));
    if (candidates.length > 0) ops.push({ op: 'mount', id: pick(candidates) });
  }
  const parents = ids.filter((i) => !removed.has(i));
  const parent = parents.length > 0 && rnd() < 0.8 ? pick(parents) : null;
  const id = newId();
  if (rnd() < 0.75) {
    ops.push({ op: 'create', id, parent });
    ops.push({ op: 'apply', id, seed: Math.floor(rnd() * 2 ** 31), bytes: Math.floor(bytes * (0.5 + rnd())), whiteout: parent !== null && existsSync(join(model.get(parent)!.ref, 'common')) });
  } else {
    ops.push({ op: 'createRW', id, parent });
  }
  return ops;
}

/** Lazily unmounts every mount at or below `path`, deepest first. */
async function detachUnder(path: string): Promise<void> {
  const mounts = (await readMountInfo()).filter((m) => m.mountPoint === path || m.mountPoint.startsWith(`${path}/`));
  for (const m of mounts.reverse()) await umount2(m.mountPoint, sysConstants.MNT_DETACH).catch(() => undefined);
}

/** Removes every layer (children first) so the run leaves no mounts or subvolumes behind. */
async function cleanupStore(factory: DriverFactory, root: string, listOnDisk: (home: string) => Promise<string[]>, options: Record<string, string>): Promise<void> {
  let driver: StorageDriver;
  try {
    driver = await factory.open({ root, home: join(root, factory.name), options, lockTimeoutMs: 5000 });
  } catch {
    return;
  }
  try {
    for (let round = 0; round < 64; round++) {
      const ids = await listOnDisk(join(root, factory.name)).catch(() => []);
      let removed = 0;
      for (const id of ids) {
        if (!(await driver.exists(id).catch(() => false))) continue;
        await driver.remove(id).then(() => removed++, () => undefined);
      }
      if (removed === 0) break;
    }
  } finally {
    await driver.cleanup();
  }
}
