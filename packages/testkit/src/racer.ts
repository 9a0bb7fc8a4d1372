// A hostile process for race tests: it swaps two names in a directory with
// renameat2(RENAME_EXCHANGE) as fast as it can while the code under test works there,
// as a process inside a running container (or a local user) could. Written in C and built
// by the tests with gcc (scripts/install-deps.sh), so each swap is one syscall and the
// race window of the code under test is hit thousands of times a second.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const SOURCE = String.raw`
// swap <dir> <a> <b> <max-tries> [symlink-target]: exchanges dir/a and dir/b until SIGTERM
// or max-tries attempts. With a symlink target, dir/b is a symlink to it before every
// swap: re-made after each swap (what was swapped out is unlinked) and whenever a swap
// finds a name missing (the code under test removed it). Prints "ready" once running and
// "swaps <n> tries <m>" at the end.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }
int main(int argc, char** argv) {
  if (argc < 5) return 2;
  int dfd = open(argv[1], O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) { perror("open"); return 1; }
  const char* a = argv[2];
  const char* b = argv[3];
  long max = atol(argv[4]);
  const char* target = argc > 5 ? argv[5] : NULL;
  signal(SIGTERM, on_term);
  if (target) symlinkat(target, dfd, b);
  printf("ready\n");
  fflush(stdout);
  long swaps = 0, tries = 0;
  while (!stop && tries < max) {
    tries++;
    if (syscall(SYS_renameat2, dfd, a, dfd, b, RENAME_EXCHANGE) == 0) {
      swaps++;
      if (target) {
        unlinkat(dfd, b, 0);
        symlinkat(target, dfd, b);
      }
    } else if (errno == ENOENT && target) {
      symlinkat(target, dfd, b);
    }
  }
  printf("swaps %ld tries %ld\n", swaps, tries);
  return 0;
}
`;

let built: string | undefined;

/** The racer binary, compiled once per source version into the temp dir. */
export function racerBinary(): string {
  if (built !== undefined) return built;
  const hash = createHash('sha256').update(SOURCE).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), `cairn-racer-${hash}`);
  const bin = join(dir, 'swap');
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    const tmp = `${bin}.${process.pid}`;
    writeFileSync(`${tmp}.c`, SOURCE);
    try {
      execFileSync('gcc', ['-O2', '-Wall', '-o', tmp, `${tmp}.c`], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      throw new Error('cannot build the race-test racer with gcc (scripts/install-deps.sh installs it)', { cause: err });
    }
    renameSync(tmp, bin); // atomic: parallel workers may build it at the same time
  }
  built = bin;
  return bin;
}

export interface SwapRacer {
  /** Stops the racer and reports how many swaps succeeded (0: it never had both names at once). */
  stop(): Promise<{ swaps: number; tries: number }>;
}

export interface SwapRacerOptions {
  /** The directory the two names are in. */
  dir: string;
  a: string;
  b: string;
  /** Keep `b` a symlink to this: re-made after every swap and whenever a swap finds a name missing. */
  symlinkTo?: string;
  /** A bound on attempts, so a racer left behind ends by itself. Default 2e8 (a few minutes). */
  maxTries?: number;
}

/** Starts a racer swapping dir/a and dir/b; resolves once it is running. */
export async function startSwapRacer(opts: SwapRacerOptions): Promise<SwapRacer> {
  const args = [opts.dir, opts.a, opts.b, String(opts.maxTries ?? 200_000_000), ...(opts.symlinkTo !== undefined ? [opts.symlinkTo] : [])];
  const proc: ChildProcess = spawn(racerBinary(), args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.done || first.value !== 'ready') {
    proc.kill('SIGKILL');
    throw new Error(`race-test racer did not start (${String(first.value)})`);
  }
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return {
    async stop() {
      proc.kill('SIGTERM');
      const last = await lines.next();
      await exited;
      const m = /^swaps (\d+) tries (\d+)$/.exec(last.done ? '' : last.value);
      if (!m) throw new Error(`race-test racer ended without its counts (${String(last.value)})`);
      return { swaps: Number(m[1]), tries: Number(m[2]) };
    },
  };
}

/**
 * The tree of the upper-dir walk races, under `work`: `upper/d` (32 files), `lower/d`,
 * `host` (32 `hostonly*` files) and `upper/evil` → host, ready for raceListing to swap
 * `d` and `evil`.
 */
export function plantUpperWithHostLink(work: string): { upper: string; lower: string; host: string } {
  const upper = join(work, 'upper');
  const lower = join(work, 'lower');
  const host = join(work, 'host');
  for (const d of [join(upper, 'd'), join(lower, 'd'), host]) mkdirSync(d, { recursive: true });
  for (let i = 0; i < 32; i++) writeFileSync(join(upper, 'd', `f${i}`), 'A');
  for (let i = 0; i < 32; i++) writeFileSync(join(host, `hostonly${i}`), 'host');
  symlinkSync(host, join(upper, 'evil'));
  return { upper, lower, host };
}

export interface ListingRace {
  /** Host names listed (in a result, or named in an error: a listing of the host too). */
  hostNames: number;
  swaps: number;
  /** How the walks ended: `ok`, or the error's code. */
  outcomes: Record<string, number>;
}

/**
 * Runs `walk` `rounds` times while a racer swaps `dir/a` (a directory of the layer) with
 * `dir/b` (a symlink to a host directory whose names contain `marker`), and counts what
 * reached the host: the race of every change-walk test.
 */
export async function raceListing(opts: {
  dir: string; a: string; b: string; rounds: number; marker?: string;
  walk: () => Promise<Array<{ path: string }>> | Array<{ path: string }>;
}): Promise<ListingRace> {
  const marker = opts.marker ?? 'hostonly';
  const racer = await startSwapRacer({ dir: opts.dir, a: opts.a, b: opts.b });
  const outcomes: Record<string, number> = {};
  let hostNames = 0;
  let swaps = 0;
  try {
    for (let r = 0; r < opts.rounds; r++) {
      try {
        hostNames += (await opts.walk()).filter((c) => c.path.includes(marker)).length;
        outcomes.ok = (outcomes.ok ?? 0) + 1;
      } catch (err) {
        if (String((err as Error).message).includes(marker)) hostNames++;
        const code = (err as { code?: string }).code ?? String(err);
        outcomes[code] = (outcomes[code] ?? 0) + 1;
      }
    }
  } finally {
    swaps = (await racer.stop()).swaps;
  }
  return { hostNames, swaps, outcomes };
}
