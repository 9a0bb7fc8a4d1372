import { fileURLToPath } from 'node:url';
import { killChild, nextLine, spawnTsChild, type CrashChild } from './crash.js';
import type { StressOptions, WitnessOptions, WorkReport } from './remote-work.js';

const CHILD = fileURLToPath(new URL('./remote-child.ts', import.meta.url));

/** An error a remote call failed with: the driver's code and message. */
export class RemoteError extends Error {
  constructor(readonly code: string | null, message: string) {
    super(message);
    this.name = 'RemoteError';
  }
}

interface Pending { resolve: (v: unknown) => void; reject: (e: unknown) => void; begun: () => void }

/**
 * A storage driver open in another process (remote-child.ts), for tests that need
 * several real processes on one root: calls go over its stdin as JSON lines and come
 * back as values or {@link RemoteError}s with the driver's code. `kill()` is SIGKILL to
 * its process group, whatever it is doing.
 */
export class RemoteDriver {
  private nextId = 0;
  private readonly pending = new Map<number, Pending>();
  private readonly begun = new Map<number, Promise<void>>();
  /** Resolves when the process has exited. */
  readonly exited: Promise<void>;

  private constructor(private readonly child: CrashChild, readonly pid: number) {
    this.exited = child.exited;
    void this.listen();
  }

  /** Starts a process and opens `driver` on `root` in it. */
  static async start(driver: string, root: string, opts: { options?: Record<string, string>; lockTimeoutMs?: number } = {}): Promise<RemoteDriver> {
    const child = spawnTsChild(CHILD, []);
    const first = await nextLine(child);
    if (first !== 'loaded') {
      killChild(child);
      throw new Error(`remote driver process did not start (said ${String(first)})`);
    }
    const remote = new RemoteDriver(child, child.proc.pid!);
    await remote.send({ op: 'open', driver, root, options: opts.options ?? {}, lockTimeoutMs: opts.lockTimeoutMs ?? 30_000 });
    return remote;
  }

  /** Calls a driver method (`create`, `get`, `mountCount`, …) in the process. */
  call<T = unknown>(method: string, ...args: unknown[]): Promise<T> {
    return this.send({ op: 'call', method, args }) as Promise<T>;
  }

  /**
   * applyDiff of testkit's layerTar(layer, seed, bytes, whiteout); with `paceMs`, the tar
   * is handed over 1 MiB at a time with that pause between pieces, so the apply lasts long
   * enough to be interrupted on a fast machine.
   */
  apply(layer: string, seed: number, bytes: number, whiteout = false, paceMs = 0): Promise<number> {
    return this.send({ op: 'apply', layer, seed, bytes, whiteout, paceMs }) as Promise<number>;
  }

  /**
   * Like `apply`, paced (20 ms per MiB), but resolves `begun` as soon as the process has
   * started on it (for a kill mid-apply).
   */
  applyStarted(layer: string, seed: number, bytes: number): { begun: Promise<void>; done: Promise<number> } {
    const done = this.apply(layer, seed, bytes, false, 20);
    done.catch(() => undefined);
    return { begun: this.begun.get(this.nextId - 1)!, done };
  }

  /** Reads `path` inside the layer (get, read, put). */
  read(layer: string, path: string): Promise<string> {
    return this.send({ op: 'read', layer, path }) as Promise<string>;
  }

  startWitness(opts: WitnessOptions): Promise<void> {
    return this.send({ op: 'witness', ...opts }) as Promise<void>;
  }

  stopWitness(): Promise<WorkReport> {
    return this.send({ op: 'stop' }) as Promise<WorkReport>;
  }

  stress(opts: StressOptions): Promise<WorkReport> {
    return this.send({ op: 'stress', ...opts }) as Promise<WorkReport>;
  }

  /** cleanup() in the process, then it exits 0. Resolves with its exit code. */
  async exit(): Promise<number | null> {
    await this.send({ op: 'exit' });
    await this.exited;
    return this.child.proc.exitCode;
  }

  /** SIGKILL to the process group, now. */
  kill(): void {
    killChild(this.child);
  }

  private send(msg: Record<string, unknown>): Promise<unknown> {
    const id = this.nextId++;
    let markBegun!: () => void;
    this.begun.set(id, new Promise<void>((r) => { markBegun = r; }));
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, begun: markBegun });
      this.child.proc.stdin!.write(`${JSON.stringify({ id, ...msg })}\n`);
    });
  }

  private async listen(): Promise<void> {
    for (let line = await nextLine(this.child); line !== null; line = await nextLine(this.child)) {
      const msg = JSON.parse(line) as { id: number; begun?: true; ok?: unknown; err?: { code: string | null; message: string } };
      const p = this.pending.get(msg.id);
      if (!p) continue;
      if (msg.begun) { p.begun(); continue; }
      this.pending.delete(msg.id);
      this.begun.delete(msg.id);
      if (msg.err) p.reject(new RemoteError(msg.err.code, msg.err.message));
      else p.resolve(msg.ok);
    }
    for (const [, p] of this.pending) p.reject(new RemoteError('EXITED', `remote driver process ${this.pid} exited`));
    this.pending.clear();
  }
}
