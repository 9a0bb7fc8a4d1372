import { AsyncLocalStorage } from 'node:async_hooks';
import { constants as fsConstants, fstatSync, readSync, writeSync } from 'node:fs';
import { mkdir, open, statfs, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, errnoCode } from './errors.js';
import { FS_MAGIC_FUSE } from './backingfs.js';
import { flockHolders, flockUntil, tryFlock, unflock } from './flock.js';
import { selfIdentity } from './proc.js';
import { KeyedMutex } from './mutex.js';

/**
 * # One store, many processes: the locks
 *
 * Any number of processes may open one driver home at once (a runtime, the `cairn` CLI, a
 * second runtime), as with containers/storage. No lock is held for a driver's lifetime:
 * `openDriver` returns holding nothing, and every operation takes what it needs and lets
 * go when it returns. Two kinds of lock, both flock(2), so a holder that dies (however it
 * dies) releases them at once and nobody has to guess from pid files:
 *
 * - **The store lock**, `${home}/.cairn-lock`, a reader/writer lock over the *layer
 *   table* (which layers exist, their parents and kinds). Readers: `exists`, the existence
 *   checks inside get/apply/diff, `status`, `metadata`. Writers: what adds or drops a
 *   layer (create, remove) and open-time repairs. It is held for the table work only,
 *   milliseconds: never across a copy, an apply or a mount of unbounded length (vfs
 *   copies a parent outside it, see that driver).
 * - **A layer lock** per layer, `${home}/.cairn/locks/<id>`, exclusive, for everything
 *   that changes one layer: create (all of it), applyDiff (all of it: seconds to minutes),
 *   remove, and get/put (the mount or unmount plus the shared hold record, see holds.ts).
 *
 * **Order.** Layer locks first (several at once in sorted id order), then the store lock.
 * Never the other way: a process that holds the store lock may only *try* a layer lock
 * (`tryLayer`, which never waits). Two processes therefore cannot wait on each other in
 * a cycle. The rule is checked at run time; breaking it is a programming error.
 *
 * **Reentrant within one operation.** The locks an async call chain holds are tracked
 * with AsyncLocalStorage, so an operation that holds layer X (applyDiff) may call
 * another that takes layer X (get/put of the naive diff) without deadlocking on itself.
 * A frame is marked inactive when its lock is released, so a promise chain that outlives
 * its operation does not inherit a lock it no longer has. The frames cost: on Node 20,
 * while the storage is enabled every promise of the process runs a hook. So an operation
 * on one layer whose work never comes back to that layer's lock (overlay2's get and put)
 * may hold it *frameless* (LayerLockOptions), as may a writer of the store lock whose work
 * never asks for it again (`write`'s option; overlay2's create and remove hold both their
 * locks so), and the storage is disabled once no framed operation has run for a while: a
 * process that makes, gets, puts and removes overlay2 layers pays no hook.
 *
 * **In one process** concurrent operations queue in memory (FIFO; readers share) before
 * they touch flock, and that queue is not bounded by the timeout: our own operations
 * always finish. Every driver instance has its own queue and its own open of the lock
 * file, so two instances in one process exclude each other exactly as two processes do.
 *
 * **Waiting** for another process: flock with LOCK_NB, retried with growing pauses
 * (1–8 ms, jittered) until `lockTimeoutMs` (an `openDriver` option, default 30 000),
 * then `ERR_LOCKED` naming the holder: the pids come from the kernel (`/proc/locks`), the
 * operation from the lock file, where every writer writes its pid, start time, op and
 * since-when as it takes the lock.
 *
 * **No stale table.** The store lock file also carries a *generation*: each writer bumps it
 * as it takes the lock (see {@link SharedTable}). A process keeps its layer table in memory
 * and reloads it from disk at the start of an operation when the generation differs from
 * the one it loaded, as containers/storage does with its lockfile's last-writer token. A
 * writer that was current before its own bump stays current after it.
 *
 * **What a crashed holder leaves.** Its locks are gone with it. The lock file names a dead
 * writer (ignored: the kernel is the authority on who holds what). Work in progress is
 * marked on disk by the driver (a staging name with the owner's pid and start time, a
 * metadata file without its layer, an undo snapshot) and protected by the layer lock its
 * operation held: the next process that can *take* that layer lock (`tryLayer`) knows the
 * owner is gone and repairs it; a live owner still holds it, so its work is never touched.
 *
 * **Lock files of removed layers** are unlinked by remove while it holds them. Whoever
 * opened the old file and then gets the flock checks that the path still names the inode
 * it locked, and starts over otherwise, so an unlink never lets two processes hold "the
 * same" lock on two inodes.
 */

/** The store lock file in every driver home (layer ids cannot start with '.'). */
export const STORE_LOCK_FILE = '.cairn-lock';
/** cairn's own state in a driver home: layer locks, mount holds. */
export const STATE_DIR = '.cairn';

/** Default of `lockTimeoutMs`: how long an operation waits for another process. */
export const DEFAULT_LOCK_TIMEOUT_MS = 30_000;

/** Bytes of the record at the start of a lock file (padded with spaces, so one write replaces it). */
const RECORD_BYTES = 256;
/**
 * A layer lock file is one page: the holder record, then the layer's own record area
 * (SharedMounts keeps the mount holds there), read once when the lock is taken and
 * rewritten in place by one pwrite within the page: what another process reads is the
 * old content or the new, never half (a page write is not torn by a SIGKILL).
 */
export const LAYER_LOCK_PAGE = 4096;
/** How much of the page a layer's record may fill (JSON, space-padded). */
export const LAYER_RECORD_BYTES = LAYER_LOCK_PAGE - RECORD_BYTES;

export interface StoreLocksOptions {
  /** Milliseconds to wait for another process before ERR_LOCKED; 0 = try once. */
  timeoutMs: number;
  /** What the store is, for messages: "the vfs layer table". */
  what: string;
}

/** What a lock file records about its last writer. */
interface LockRecord {
  generation?: number;
  pid?: number;
  start?: number;
  op?: string;
  since?: number;
}

/** A layer lock this instance holds: its open file and the page as read (kept in step with our writes). */
interface LayerFile {
  handle: FileHandle;
  page: Buffer;
  /** The record area's text (null: empty), decoded once when the page is read and kept in step with our writes. */
  record: string | null;
  /**
   * The holder record is in `page` but not yet on disk: it goes out with the first record
   * write, in the same pwrite (see StoreLocks.layer's `holderWithRecord`).
   */
  holderPending: boolean;
  /** Held by an operation without a frame (LayerLockOptions.frameless): its record is open to the instance. */
  frameless: boolean;
  /** Unlinked by forgetLayer: closed when the lock is let go, never kept idle (nothing will lock that inode again). */
  forgotten: boolean;
}

/** A layer lock file kept open between operations, with its page buffer (re-read at the next lock). */
interface IdleFile {
  handle: FileHandle;
  page: Buffer;
}

/** Options of {@link StoreLocks.layer}. */
export interface LayerLockOptions {
  /**
   * The operation writes the layer's record (setLayerRecord) right after it takes the
   * lock, before any work of unbounded length: the holder record then goes to disk with
   * that write, one pwrite of the whole page instead of two. (SharedMounts' get does so.)
   */
  holderWithRecord?: boolean;
  /**
   * Hold the lock without an AsyncLocalStorage frame: for an operation on one layer whose
   * work never takes, tries or checks that layer's lock again (overlay2's get and put: the
   * mount hooks touch only the store lock). It may still be called from within an
   * operation that holds the layer (reentrant as usual). Why: while any frame is live,
   * Node 20 runs a hook on every promise the process makes; get and put make hundreds.
   */
  frameless?: boolean;
}

interface Frame {
  readonly locks: StoreLocks;
  /** 'table' or 'layer:<id>'. */
  readonly key: string;
  readonly exclusive: boolean;
  active: boolean;
}

const held = new AsyncLocalStorage<readonly Frame[]>();

/**
 * Operations of this process running inside a frame (every StoreLocks instance). Once none
 * has run for IDLE_DISABLE_MS the storage is disabled, which takes Node 20's promise hook
 * away until the next frame (run() enables it again): a process that then only gets and
 * puts (frameless) pays no hook on its promises. Not at once when the last frame ends:
 * enabling the hook again costs more than an operation's worth of hooked promises, so a
 * burst of framed operations keeps it. Nothing reads a frame after its operation ended
 * (frames are marked inactive then), so forgetting them all loses nothing.
 */
let liveScopes = 0;
let idleCheck: NodeJS.Timeout | null = null;
const IDLE_DISABLE_MS = 50;

function disableWhenIdle(): void {
  idleCheck = null;
  if (liveScopes === 0) held.disable();
}

/** Runs `fn` with `frames` added to the current ones; the caller calls scopeEnded() once it settled. */
function runInScope<T>(frames: readonly Frame[], fn: () => Promise<T>): Promise<T> {
  liveScopes++;
  return held.run([...(held.getStore() ?? []), ...frames], fn);
}

function scopeEnded(): void {
  if (--liveScopes === 0 && idleCheck === null) {
    idleCheck = setTimeout(disableWhenIdle, IDLE_DISABLE_MS);
    idleCheck.unref();
  }
}

/** Layer lock files an instance keeps open between operations (see StoreLocks.idleFiles). */
const MAX_IDLE_LAYER_FILES = 64;

/** In-process reader/writer queue, first come first served (a writer is not starved by a stream of readers). */
class RwQueue {
  private readers = 0;
  private writer = false;
  private readonly waiting: Array<{ exclusive: boolean; grant: () => void }> = [];

  acquire(exclusive: boolean): Promise<void> {
    if (this.waiting.length === 0 && this.fits(exclusive)) {
      this.take(exclusive);
      return Promise.resolve();
    }
    return new Promise((grant) => this.waiting.push({ exclusive, grant }));
  }

  release(exclusive: boolean): void {
    if (exclusive) this.writer = false;
    else this.readers--;
    while (this.waiting.length > 0 && this.fits(this.waiting[0]!.exclusive)) {
      const next = this.waiting.shift()!;
      this.take(next.exclusive);
      next.grant();
    }
  }

  get idle(): boolean {
    return !this.writer && this.readers === 0 && this.waiting.length === 0;
  }

  private fits(exclusive: boolean): boolean {
    return exclusive ? !this.writer && this.readers === 0 : !this.writer;
  }

  private take(exclusive: boolean): void {
    if (exclusive) this.writer = true;
    else this.readers++;
  }
}

function padRecord(record: LockRecord, buf: Buffer = Buffer.alloc(RECORD_BYTES)): Buffer {
  let text = JSON.stringify(record);
  if (text.length > RECORD_BYTES - 1) text = JSON.stringify({ ...record, op: (record.op ?? '').slice(0, 80) });
  buf.fill(0x20, 0, RECORD_BYTES);
  buf.write(text, 0, RECORD_BYTES - 1, 'utf8');
  buf[RECORD_BYTES - 1] = 0x0a;
  return buf;
}

/** Padding of a layer page's record area as our writes leave it (spaces), and a fresh file's (NULs). */
const SPACE_PAD = Buffer.alloc(LAYER_RECORD_BYTES, 0x20);
const NUL_PAD = Buffer.alloc(LAYER_RECORD_BYTES, 0);
/** Long enough that a record's own text never holds a run of it in practice (checked anyway). */
const PAD_PROBE = 32;

/** Where the padding that runs to the end of `page` starts (native searches; a byte loop only over what is left). */
function paddingStart(page: Buffer): number {
  let end = page.length;
  for (const pad of [SPACE_PAD, NUL_PAD]) {
    let at = page.indexOf(pad.subarray(0, PAD_PROBE), RECORD_BYTES);
    while (at >= 0 && page.compare(pad, 0, page.length - at, at) !== 0) at = page.indexOf(pad.subarray(0, PAD_PROBE), at + 1);
    if (at >= 0) {
      end = at;
      break;
    }
  }
  while (end > RECORD_BYTES && (page[end - 1] === 0x20 || page[end - 1] === 0x00 || (page[end - 1]! >= 0x09 && page[end - 1]! <= 0x0d))) end--;
  return end;
}

/** The text of a layer page's record area without its padding (spaces, NULs of a fresh file); null when empty. */
function recordText(page: Buffer): string | null {
  const end = paddingStart(page);
  return end === RECORD_BYTES ? null : page.toString('utf8', RECORD_BYTES, end);
}

/**
 * The few bytes a lock operation reads and writes on its lock file: with synchronous
 * calls where the file lives on a local filesystem (a pwrite of 256 bytes into the page
 * cache costs microseconds, a trip through the libuv pool far more), through the pool
 * where it lives on FUSE (zfs-fuse: every call is a round trip to a daemon, which must
 * never hold up the event loop).
 */
class LockFileIo {
  constructor(readonly sync: boolean) {}

  async read(handle: FileHandle, buf: Buffer, length: number): Promise<number> {
    return this.sync ? readSync(handle.fd, buf, 0, length, 0) : (await handle.read(buf, 0, length, 0)).bytesRead;
  }

  /** Writes `length` bytes of `buf` from `offset` at file position `position`. */
  async write(handle: FileHandle, buf: Buffer, length: number, position: number, offset = 0): Promise<void> {
    if (this.sync) writeSync(handle.fd, buf, offset, length, position);
    else await handle.write(buf, offset, length, position);
  }

  /** The link count and size of the open file (one fstat). */
  async stat(handle: FileHandle): Promise<{ nlink: number; size: number }> {
    return this.sync ? fstatSync(handle.fd) : handle.stat();
  }
}

async function readRecord(io: LockFileIo, handle: FileHandle): Promise<LockRecord | null> {
  const buf = Buffer.alloc(RECORD_BYTES);
  const bytesRead = await io.read(handle, buf, RECORD_BYTES);
  if (bytesRead === 0) return { generation: 0 }; // a fresh lock file: nobody has written yet
  try {
    const parsed = JSON.parse(buf.subarray(0, bytesRead).toString('utf8')) as unknown;
    return typeof parsed === 'object' && parsed !== null ? parsed as LockRecord : null;
  } catch {
    return null; // empty (a fresh file), or torn by a writer killed mid-write
  }
}

/** The locks of one driver home (or image store directory), for one driver instance. */
export class StoreLocks {
  readonly lockPath: string;
  readonly layerLockDir: string;
  readonly timeoutMs: number;
  private readonly what: string;
  private handle: FileHandle | null = null;
  private opening: Promise<FileHandle> | null = null;
  private readonly queue = new RwQueue();
  private readonly layerQueue = new KeyedMutex();
  /** The open, locked file of each layer an operation of this instance holds (one per id: the queue is exclusive). */
  private readonly layerFiles = new Map<string, LayerFile>();
  /**
   * Layer lock files kept open, unlocked, between operations (least recently used first),
   * so that a get or put costs no open and close: an instance keeps at most this many.
   */
  private readonly idleFiles = new Map<string, IdleFile>();
  /** In-process readers sharing one LOCK_SH, and the promise of getting it. */
  private readers = 0;
  private sharedGrant: Promise<void> | null = null;
  private io = new LockFileIo(false);
  private ioChosen = false;
  private gen = Number.NaN;
  private bumpedFrom = Number.NaN;
  private closed = false;

  constructor(readonly home: string, opts: StoreLocksOptions) {
    this.lockPath = join(home, STORE_LOCK_FILE);
    this.layerLockDir = join(home, STATE_DIR, 'locks');
    this.timeoutMs = Math.max(0, opts.timeoutMs);
    this.what = opts.what;
  }

  /**
   * The table's generation while this process holds the store lock (read or write);
   * NaN when unknown (a fresh or torn lock file), which never matches a loaded table.
   */
  get generation(): number {
    return this.gen;
  }

  /** During a write: the generation before this writer's bump (a table loaded at it is still current). */
  get previousGeneration(): number {
    return this.bumpedFrom;
  }

  /** Runs `fn` holding the store lock shared. */
  async read<T>(op: string, fn: () => Promise<T>): Promise<T> {
    if (this.frame('table')) return fn();
    await this.queue.acquire(false);
    try {
      if (this.readers++ === 0) this.sharedGrant = this.takeShared(op);
      try {
        await this.sharedGrant;
      } catch (err) {
        this.dropReader();
        throw err;
      }
      try {
        return await this.inFrame('table', false, fn);
      } finally {
        this.dropReader();
      }
    } finally {
      this.queue.release(false);
    }
  }

  /**
   * Runs `fn` holding the store lock exclusively; bumps the generation as it takes it.
   * `frameless`: as LayerLockOptions.frameless, for a writer whose work never reads,
   * writes or checks the store lock again (it would wait on itself): overlay2's create
   * and remove, so that a process making and removing layers runs no promise hook.
   */
  async write<T>(op: string, fn: () => Promise<T>, opts: { frameless?: boolean } = {}): Promise<T> {
    const current = this.frame('table');
    if (current?.exclusive) return fn();
    if (current) throw new Error(`cairn internal error: ${op} asked for the ${this.what} write lock while holding its read lock`);
    await this.queue.acquire(true);
    let locked = false;
    try {
      const handle = await this.lockedFile(true, op);
      locked = true;
      const record = await readRecord(this.io, handle);
      const before = typeof record?.generation === 'number' ? record.generation : Number.NaN;
      // A torn or missing counter restarts somewhere no table was ever loaded at.
      const after = Number.isSafeInteger(before) ? before + 1 : Date.now() * 1000 + Math.floor(Math.random() * 1000);
      const me = selfIdentity();
      await this.io.write(handle, padRecord({ generation: after, pid: me.pid, start: me.start, op, since: Date.now() }), RECORD_BYTES, 0);
      this.bumpedFrom = before;
      this.gen = after;
      return await (opts.frameless === true ? fn() : this.inFrame('table', true, fn));
    } finally {
      this.bumpedFrom = Number.NaN;
      if (locked && this.handle) unflock(this.handle.fd);
      this.queue.release(true);
      await this.closeIfIdle();
    }
  }

  /**
   * Runs `fn` holding the layer locks of `ids` (in sorted order; those this operation
   * already holds are not taken again). Refused while the store lock is held (order rule).
   * `fn` may let go of one of them early with `unlock(id)` (vfs keeps the parent's lock
   * only while it registers a child).
   */
  async layer<T>(ids: string | readonly string[], op: string, fn: (unlock: (id: string) => Promise<void>) => Promise<T>, opts: LayerLockOptions = {}): Promise<T> {
    const wanted = [...new Set(typeof ids === 'string' ? [ids] : ids)].sort().filter((id) => !this.frame(`layer:${id}`));
    const noop = async () => undefined;
    if (wanted.length === 0) return fn(noop);
    if (this.frame('table')) {
      throw new Error(`cairn internal error: ${op} asked for the lock of layer ${wanted.join(', ')} while holding the store lock (layer locks come first)`);
    }
    const taken = new Map<string, { release: () => void; frame: Frame }>();
    let scoped = false;
    const unlock = async (id: string): Promise<void> => {
      const t = taken.get(id);
      if (!t) return;
      taken.delete(id);
      t.frame.active = false;
      const file = this.layerFiles.get(id);
      this.layerFiles.delete(id);
      if (file) await this.putBack(id, file);
      t.release();
    };
    try {
      for (const id of wanted) {
        const release = await this.layerQueue.acquire(id);
        try {
          this.layerFiles.set(id, (await this.lockLayerFile(id, op, Date.now() + this.timeoutMs, opts.holderWithRecord === true))!);
          taken.set(id, { release, frame: { locks: this, key: `layer:${id}`, exclusive: true, active: true } });
        } catch (err) {
          release();
          throw err;
        }
      }
      if (opts.frameless === true && wanted.length === 1) {
        for (const t of taken.values()) t.frame.active = false;
        this.layerFiles.get(wanted[0]!)!.frameless = true;
        return await fn(unlock);
      }
      const frames = [...taken.values()].map((t) => t.frame);
      scoped = true;
      return await runInScope(frames, () => fn(unlock));
    } finally {
      if (scoped) scopeEnded();
      for (const id of [...taken.keys()].reverse()) await unlock(id);
    }
  }

  /**
   * Runs `fn` under the lock of layer `id` only if it is free right now, in this process
   * and in every other: `{ ran: false }` when someone holds it (a live operation on that
   * layer, whose work in progress must be left alone). Never waits, so it may be called
   * holding the store lock: this is how repairs tell a dead owner from a live one.
   */
  async tryLayer<T>(id: string, op: string, fn: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }> {
    if (this.frame(`layer:${id}`)) return { ran: true, value: await fn() };
    const release = this.layerQueue.tryAcquire(id);
    if (!release) return { ran: false };
    let file: LayerFile | null = null;
    try {
      file = await this.lockLayerFile(id, op, null, false);
      if (!file) return { ran: false };
      this.layerFiles.set(id, file);
      return { ran: true, value: await this.inFrames([`layer:${id}`], fn) };
    } finally {
      if (file) {
        this.layerFiles.delete(id);
        await this.putBack(id, file);
      }
      release();
    }
  }

  /** Whether the current operation holds the store lock, and how. */
  holdsTable(): 'read' | 'write' | null {
    const f = this.frame('table');
    return f ? (f.exclusive ? 'write' : 'read') : null;
  }

  /** True when the current operation holds the lock of layer `id`. */
  holdsLayer(id: string): boolean {
    return this.frame(`layer:${id}`) !== undefined;
  }

  /**
   * The layer's record area (see LAYER_LOCK_PAGE) as its lock file holds it: null when
   * empty. The current operation must hold the layer's lock.
   */
  layerRecord(id: string): string | null {
    return this.heldFile(id).record;
  }

  /**
   * Replaces the layer's record area (null empties it) with one pwrite (of the whole page
   * when the holder record is still to be written); RangeError when `text` does not fit.
   */
  async setLayerRecord(id: string, text: string | null): Promise<void> {
    const file = this.heldFile(id);
    if (text !== null && Buffer.byteLength(text) > LAYER_RECORD_BYTES) {
      throw new RangeError(`a ${Buffer.byteLength(text)}-byte record does not fit the ${LAYER_RECORD_BYTES} bytes of a layer lock file`);
    }
    const { page } = file;
    page.fill(0x20, RECORD_BYTES);
    if (text !== null) page.write(text, RECORD_BYTES, 'utf8');
    // The page now differs from the file until the write lands; `record` says what is on disk.
    if (file.holderPending) await this.io.write(file.handle, page, LAYER_LOCK_PAGE, 0, 0);
    else await this.io.write(file.handle, page, LAYER_RECORD_BYTES, RECORD_BYTES, RECORD_BYTES);
    file.holderPending = false;
    file.record = text;
  }

  /**
   * Writes the holder record now if it waits for the first record write (holderWithRecord):
   * for an operation about to do something long before writing its record (an unmount).
   */
  async writeHolder(id: string): Promise<void> {
    const file = this.heldFile(id);
    if (!file.holderPending) return;
    await this.io.write(file.handle, file.page, RECORD_BYTES, 0);
    file.holderPending = false;
  }

  /**
   * Deletes the lock file of a layer that is gone. The caller holds that layer's lock;
   * see the class comment for why this is safe for those waiting on it.
   */
  async forgetLayer(id: string): Promise<void> {
    const file = this.heldFile(id);
    await unlink(join(this.layerLockDir, id)).catch(() => undefined);
    file.forgotten = true;
  }

  /** Closes the store lock file once nothing in this process uses it, and the idle layer lock files (driver cleanup). */
  async close(): Promise<void> {
    this.closed = true;
    for (const [id, idle] of [...this.idleFiles]) {
      this.idleFiles.delete(id);
      await idle.handle.close().catch(() => undefined);
    }
    await this.closeIfIdle();
  }

  // ---- internals ------------------------------------------------------------------

  /** Synchronous lock file I/O unless the home is on FUSE (decided once, see LockFileIo). */
  private async chooseIo(): Promise<void> {
    if (this.ioChosen) return;
    const type = await statfs(this.home).then((st) => Number(st.type), () => null);
    if (type === null) return; // no home yet: the pool for now, ask again next time
    this.io = new LockFileIo(type !== FS_MAGIC_FUSE);
    this.ioChosen = true;
  }

  /** Unlocks a layer lock file and keeps it open for the next operation on that layer (or closes it). */
  private async putBack(id: string, file: LayerFile): Promise<void> {
    const { handle, page } = file;
    // An unlinked file is closed, which drops the flock too; kept idle it would take a
    // slot from a live layer's file, and the next lock of this id would find it unlinked.
    if (this.closed || this.idleFiles.has(id) || file.forgotten) {
      await handle.close().catch(() => undefined);
      return;
    }
    unflock(handle.fd);
    this.idleFiles.set(id, { handle, page });
    if (this.idleFiles.size > MAX_IDLE_LAYER_FILES) {
      const [oldest, old] = this.idleFiles.entries().next().value as [string, IdleFile];
      this.idleFiles.delete(oldest);
      await old.handle.close().catch(() => undefined);
    }
  }

  private heldFile(id: string): LayerFile {
    const file = this.layerFiles.get(id);
    // A frameless holder (see LayerLockOptions) has no frame to show: the record is its alone.
    if (file && (file.frameless || this.holdsLayer(id))) return file;
    throw new Error(`cairn internal error: the record of layer ${id} was used without its lock`);
  }

  private frame(key: string): Frame | undefined {
    return held.getStore()?.find((f) => f.locks === this && f.key === key && f.active);
  }

  private async inFrame<T>(key: string, exclusive: boolean, fn: () => Promise<T>): Promise<T> {
    const frame: Frame = { locks: this, key, exclusive, active: true };
    try {
      return await runInScope([frame], fn);
    } finally {
      frame.active = false;
      scopeEnded();
    }
  }

  private async inFrames<T>(keys: string[], fn: () => Promise<T>): Promise<T> {
    const frames: Frame[] = keys.map((key) => ({ locks: this, key, exclusive: true, active: true }));
    try {
      return await runInScope(frames, fn);
    } finally {
      for (const f of frames) f.active = false;
      scopeEnded();
    }
  }

  /**
   * The store lock file, flocked. The file is never deleted by cairn; if someone did
   * (our open file has no name left), locking it would exclude nobody: open the new one.
   */
  private async lockedFile(exclusive: boolean, op: string): Promise<FileHandle> {
    for (;;) {
      const handle = await this.file();
      await this.waitFlock(handle, exclusive, this.lockPath, op, `the ${this.what}`);
      if ((await this.io.stat(handle)).nlink > 0) return handle;
      unflock(handle.fd);
      if (this.handle === handle) this.handle = null;
      await handle.close().catch(() => undefined);
    }
  }

  private async file(): Promise<FileHandle> {
    if (this.handle) return this.handle;
    this.opening ??= (async () => {
      await mkdir(this.home, { recursive: true, mode: 0o700 });
      await this.chooseIo();
      // Node opens with O_CLOEXEC: tools we spawn (mkfs, zfs, …) never inherit a lock.
      const handle = await open(this.lockPath, fsConstants.O_RDWR | fsConstants.O_CREAT, 0o600);
      this.handle = handle;
      return handle;
    })().finally(() => { this.opening = null; });
    return this.opening;
  }

  private async takeShared(op: string): Promise<void> {
    const handle = await this.lockedFile(false, op);
    const record = await readRecord(this.io, handle);
    this.gen = typeof record?.generation === 'number' ? record.generation : Number.NaN;
  }

  private dropReader(): void {
    if (--this.readers > 0) return;
    this.sharedGrant = null;
    if (this.handle) unflock(this.handle.fd);
    void this.closeIfIdle();
  }

  private async closeIfIdle(): Promise<void> {
    if (!this.closed || !this.queue.idle || this.readers > 0 || !this.handle) return;
    const handle = this.handle;
    this.handle = null;
    await handle.close().catch(() => undefined);
  }

  /**
   * Opens (creating) the lock file of layer `id` and flocks it, waiting until `deadline`
   * (null: one try, null back when taken); reads its page and writes the holder record.
   * Starts over when the file was unlinked while we waited (a remove of that layer: our
   * open file then has no name left).
   */
  private async lockLayerFile(id: string, op: string, deadline: number | null, holderWithRecord: boolean): Promise<LayerFile | null> {
    const path = join(this.layerLockDir, id);
    await this.chooseIo();
    for (;;) {
      const idle = this.idleFiles.get(id);
      this.idleFiles.delete(id);
      let handle = idle?.handle;
      try {
        handle ??= await open(path, fsConstants.O_RDWR | fsConstants.O_CREAT, 0o600);
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err;
        await mkdir(this.layerLockDir, { recursive: true, mode: 0o700 });
        continue;
      }
      try {
        const got = deadline === null
          ? tryFlock(handle.fd, true, path)
          : (await this.waitFlock(handle, true, path, op, `layer ${id} in ${this.home}`, deadline), true);
        if (!got) {
          await handle.close();
          return null;
        }
        const st = await this.io.stat(handle);
        if (st.nlink === 0) {
          await handle.close();
          continue;
        }
        // The page buffer of the idle file is reused: what it held is stale, re-read here.
        // Every writer writes under this lock, so the size seen now holds until we let go:
        // an empty file (a layer's first lock, as in create) has nothing to read.
        const page = idle?.page ?? Buffer.alloc(LAYER_LOCK_PAGE);
        const bytesRead = st.size === 0 ? 0 : await this.io.read(handle, page, LAYER_LOCK_PAGE);
        if (bytesRead < LAYER_LOCK_PAGE) page.fill(0, bytesRead);
        const record = recordText(page);
        const me = selfIdentity();
        padRecord({ pid: me.pid, start: me.start, op, since: Date.now() }, page);
        if (!holderWithRecord) await this.io.write(handle, page, RECORD_BYTES, 0);
        return { handle, page, record, holderPending: holderWithRecord, frameless: false, forgotten: false };
      } catch (err) {
        await handle.close().catch(() => undefined);
        throw err;
      }
    }
  }

  private async waitFlock(handle: FileHandle, exclusive: boolean, path: string, op: string, what: string, deadline = Date.now() + this.timeoutMs): Promise<void> {
    if (await flockUntil(handle.fd, exclusive, deadline, path)) return;
    throw await this.lockedError(handle, path, op, what);
  }

  private async lockedError(handle: FileHandle, path: string, op: string, what: string): Promise<CairnError> {
    let holders = 'another process';
    try {
      const st = await handle.stat();
      const record = await readRecord(this.io, handle);
      const found = await flockHolders(st.dev, st.ino);
      const described = found.filter((h) => h.pid !== process.pid || found.length === 1).map((h) => {
        const doing = record?.pid === h.pid && typeof record.op === 'string'
          ? `: ${record.op}${typeof record.since === 'number' ? `, for ${((Date.now() - record.since) / 1000).toFixed(1)} s` : ''}` : '';
        return `process ${h.pid}${h.pid === process.pid ? ' (this process, another driver instance)' : ''} (${h.exclusive ? 'exclusive' : 'shared'}${doing})`;
      });
      if (described.length > 0) holders = described.join(', ');
    } catch {
      // Keep the generic words: the message matters more than its details.
    }
    const waited = this.timeoutMs > 0 ? `waited ${this.timeoutMs} ms (lockTimeoutMs)` : 'lockTimeoutMs is 0, so it did not wait';
    return new CairnError('ERR_LOCKED',
      `cannot ${op}: ${what} is locked by ${holders}; ${waited}. Let that operation finish and retry, or wait longer ` +
      '(the lockTimeoutMs option of openDriver, `cairn --lock-timeout MS`); if the holder hangs, stop it: the kernel releases its locks when it exits.',
      { subject: path });
  }
}

/**
 * A driver's in-memory copy of its layer table, kept honest across processes: every
 * access runs under the store lock and reloads the table (`load`, from disk) when the
 * generation changed since it was loaded, i.e. when another process (or another driver
 * instance) wrote. `write` runs under the exclusive lock; what it changes in the table it
 * also changes on disk, and a write that fails drops the copy (reloaded next time).
 */
export class SharedTable<T> {
  private value: T | undefined;
  private seen = Number.NaN;
  private loading: Promise<T> | null = null;

  constructor(readonly locks: StoreLocks, private readonly load: () => Promise<T>) {}

  read<R>(op: string, fn: (table: T) => Promise<R> | R): Promise<R> {
    return this.locks.read(op, async () => fn(await this.current()));
  }

  write<R>(op: string, fn: (table: T) => Promise<R> | R): Promise<R> {
    return this.locks.write(op, async () => {
      const table = await this.current();
      try {
        return await fn(table);
      } catch (err) {
        this.invalidate();
        throw err;
      }
    });
  }

  /** Forces a reload at the next access. */
  invalidate(): void {
    this.value = undefined;
  }

  private async current(): Promise<T> {
    const gen = this.locks.generation;
    if (this.value !== undefined && (this.seen === gen || this.seen === this.locks.previousGeneration)) {
      this.seen = gen;
      return this.value;
    }
    this.loading ??= this.load().finally(() => { this.loading = null; });
    const value = await this.loading;
    this.value = value;
    this.seen = gen;
    return value;
  }
}
