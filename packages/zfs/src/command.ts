import { execFile } from 'node:child_process';
import { access, constants as fsConstants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { CairnError } from '@cairnfs/core';

/** The two ZFS administration tools; both OpenZFS and zfs-fuse ship them under these names. */
export type ZfsTool = 'zfs' | 'zpool';

/** A `zfs`/`zpool` invocation that exited non-zero: its arguments, exit status and stderr. */
export class ZfsCommandError extends Error {
  constructor(readonly tool: ZfsTool, readonly args: readonly string[], readonly exitCode: number | null, readonly stderr: string) {
    super(`${tool} ${args.join(' ')} failed${exitCode === null ? '' : ` (exit ${exitCode})`}: ${stderr.trim() || '(no output)'}`);
    this.name = 'ZfsCommandError';
  }

  /** `cannot open 'pool/x': dataset does not exist` and the like. */
  get notFound(): boolean {
    return /does not exist|no such pool|no such dataset/i.test(this.stderr);
  }

  get alreadyExists(): boolean {
    return /already exists/i.test(this.stderr);
  }

  /** "dataset is busy", "device busy", "filesystem already mounted": transient right after an unmount under zfs-fuse. */
  get busy(): boolean {
    return /busy|already mounted/i.test(this.stderr);
  }

  get noSpace(): boolean {
    return /out of space|quota exceeded|no space/i.test(this.stderr);
  }
}

/** A property table: dataset name → property name → raw value (`-Hp`: exact numbers, `-` when unset). */
export type PropertyTable = Map<string, Map<string, string>>;

/** The directories of PATH; root's sbin directories when PATH is unset (as under some service managers). */
function searchPath(): string[] {
  const path = process.env.PATH;
  if (path === undefined) return ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  return path.split(delimiter).filter(Boolean);
}

/** The absolute path of an executable named `name`, or null when none is installed. */
export async function findTool(name: string): Promise<string | null> {
  for (const dir of searchPath()) {
    const candidate = join(dir, name);
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return null;
}

/**
 * Runs `zfs` and `zpool`, one process per call, and counts the calls. Each costs a
 * process start plus a round trip to the kernel module (OpenZFS) or the zfs-fuse daemon
 * (≈ 30–200 ms), so the driver's budget is counted in calls: `calls` lets tests assert
 * how many an operation took, `log` shows which.
 *
 * Output is parsed in the C locale; `-H` (tab-separated, no header) and `-p` (exact
 * numbers) are used wherever both implementations accept them. zfs-fuse 0.7 rejects
 * `zfs list -p` and every `zpool get` option, so numbers come from `zfs get -Hp` and pool
 * health from `zpool list -H -o`.
 */
export class ZfsCommands {
  /** Calls made so far, both tools together. */
  calls = 0;
  /** The last calls made (tool and arguments), newest last; kept short. */
  readonly log: string[] = [];

  constructor(private readonly paths: { zfs: string; zpool: string | null }) {}

  /** Finds the tools on PATH; ERR_PREREQUISITES naming `zfs` when it is missing. */
  static async locate(): Promise<ZfsCommands> {
    const zfs = await findTool('zfs');
    if (zfs === null) throw missingZfsTool();
    return new ZfsCommands({ zfs, zpool: await findTool('zpool') });
  }

  /** Runs the tool and returns its stdout; a non-zero exit rejects with {@link ZfsCommandError}. */
  run(tool: ZfsTool, args: readonly string[]): Promise<string> {
    const file = tool === 'zfs' ? this.paths.zfs : this.paths.zpool;
    if (file === null) return Promise.reject(new CairnError('ERR_PREREQUISITES', 'the zpool command is not installed; install zfsutils-linux (OpenZFS) or zfs-fuse'));
    this.calls++;
    this.log.push(`${tool} ${args.join(' ')}`);
    if (this.log.length > 50) this.log.shift();
    const started = performance.now();
    return new Promise((resolve, reject) => {
      execFile(file, args, { env: { ...process.env, LC_ALL: 'C' }, maxBuffer: 64 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
        // CAIRN_ZFS_TRACE=1 prints every call with its duration: the way to see where time goes.
        if (process.env.CAIRN_ZFS_TRACE === '1') {
          process.stderr.write(`[zfs-trace] ${(performance.now() - started).toFixed(1)} ms ${err ? 'FAIL ' : ''}${tool} ${args.join(' ')}\n`);
        }
        if (!err) {
          resolve(stdout);
          return;
        }
        const code = typeof err.code === 'number' ? err.code : null;
        reject(new ZfsCommandError(tool, args, code, stderr || err.message));
      });
    });
  }

  zfs(...args: string[]): Promise<string> {
    return this.run('zfs', args);
  }

  /**
   * Reads properties of several datasets in one call: `zfs get -Hp -o name,property,value
   * p1,p2 DS…`. Exact bytes for sizes (zfs-fuse has no `list -p`).
   */
  async getProperties(datasets: readonly string[], props: readonly string[], opts: { recursive?: boolean; depth?: number } = {}): Promise<PropertyTable> {
    const args = ['get', '-Hp'];
    if (opts.recursive) args.push('-r');
    if (opts.depth !== undefined) args.push('-d', String(opts.depth));
    args.push('-o', 'name,property,value', props.join(','), ...datasets);
    return parsePropertyTable(await this.run('zfs', args));
  }
}

/** Parses `zfs get -H -o name,property,value` output. Values may contain spaces, never tabs. */
export function parsePropertyTable(stdout: string): PropertyTable {
  const table: PropertyTable = new Map();
  for (const line of stdout.split('\n')) {
    if (line === '') continue;
    const [name, prop, ...rest] = line.split('\t');
    if (name === undefined || prop === undefined) continue;
    let row = table.get(name);
    if (!row) table.set(name, row = new Map());
    row.set(prop, rest.join('\t'));
  }
  return table;
}

export function missingZfsTool(): CairnError {
  return new CairnError('ERR_PREREQUISITES',
    'the zfs command is not installed (looked in PATH): install zfsutils-linux for OpenZFS, or zfs-fuse and start its daemon',
    { subject: 'zfs' });
}
