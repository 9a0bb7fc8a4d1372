import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { CairnError, mountLabelOption } from '@cairnfs/core';
import * as sys from '@cairnfs/sys';
import { DIFF_DIR, MERGED_DIR, WORK_DIR, layerDirName } from './layout.js';

/**
 * Overlay mounts as data, the way containerd's snapshotters return `mount.Mount`
 * values: {@link planOverlayMount} decides everything (paths, options, which syscall),
 * {@link performMount} is the one place that calls into the kernel. The planning half
 * is pure and tested without root.
 */
export interface MountSpec {
  /** `bind`: a read-only bind mount of `source` (image base layers, which have nothing to overlay). */
  type: 'overlay' | 'bind';
  /** `overlay`, or the directory bound for `bind`. */
  source: string;
  /** Mount point; relative to `cwd` when `cwd` is set. */
  target: string;
  /** When set, every relative path in target/options resolves against this directory. */
  cwd: string | null;
  readOnly: boolean;
  /**
   * `mount`: classic mount(2), options joined by ',' into one page of data.
   * `fsmount`: the new mount API, one fsconfig call per option, so `lowerdir+` can repeat
   * and there is no page limit on the total. `bind` specs always use `mount`.
   */
  method: 'mount' | 'fsmount';
  /** In order; `[key, null]` is a flag option. */
  options: Array<[string, string | null]>;
  /** Mount with this FUSE program (`overlay2.mount_program`, fuse-overlayfs) instead of the kernel: `program -o <options> <target>`. */
  program?: string;
}

export interface OverlayMountRequest {
  home: string;
  id: string;
  /** The layer's `lower` entries, relative to the home (`l/ABC…`), nearest parent first. */
  lowers: readonly string[];
  /** No upper: the layer's own diff becomes the top lower and the mount is read-only. */
  readOnly: boolean;
  /** Add `index=off` (the kernel has the index feature, which breaks moving a home). */
  indexOff: boolean;
  /** Add `userxattr` (inside a user namespace, where trusted.* xattrs are out of reach). */
  userXattr: boolean;
  /** SELinux label, passed as `context="…"` as moby's label.FormatMountLabel does. */
  mountLabel?: string | undefined;
  /** Whether fsopen/fsconfig with `lowerdir+` may be used when mount data would not fit. */
  newMountApi: boolean;
  /** Bytes of mount(2) data the kernel copies: one page. */
  pageSize?: number;
}

export const PAGE_SIZE = 4096;

/** Characters that overlayfs' option parser treats specially in paths. */
export const UNSAFE_PATH_CHARS = /[,:\\=\s"]/;

/** The `key[=value],…` string mount(2) receives. */
export function mountData(options: ReadonlyArray<[string, string | null]>): string {
  return options.map(([k, v]) => (v === null ? k : `${k}=${v}`)).join(',');
}

function commonHead(req: OverlayMountRequest): Array<[string, string | null]> {
  const head: Array<[string, string | null]> = [];
  if (req.indexOff) head.push(['index', 'off']);
  if (req.userXattr) head.push(['userxattr', null]);
  return head;
}

function tail(req: OverlayMountRequest): Array<[string, string | null]> {
  // mountLabelOption validates the label (no quote can end it early); the value is kept as
  // its own pair because the new mount API passes key and value to fsconfig separately.
  return mountLabelOption(req.mountLabel) === null ? [] : [['context', `"${req.mountLabel}"`]];
}

function layerPaths(req: OverlayMountRequest, base: string) {
  const at = (...parts: string[]) => (base === '' ? parts.join('/') : join(base, ...parts));
  const dir = layerDirName(req.id);
  return {
    lowers: [...(req.readOnly ? [at(dir, DIFF_DIR)] : []), ...req.lowers.map((l) => at(l))],
    upper: at(dir, DIFF_DIR),
    work: at(dir, WORK_DIR),
    target: at(dir, MERGED_DIR),
  };
}

function classicOptions(req: OverlayMountRequest, p: ReturnType<typeof layerPaths>): Array<[string, string | null]> {
  const opts = [...commonHead(req), ['lowerdir', p.lowers.join(':')] as [string, string]];
  if (!req.readOnly) opts.push(['upperdir', p.upper], ['workdir', p.work]);
  return [...opts, ...tail(req)];
}

/**
 * Chooses how to mount a layer, in moby's order of preference, then beyond it:
 * 1. mount(2) with absolute `l/` paths, when the data fits in a page (what dockerd does);
 * 2. mount(2) with paths relative to the home, the process cwd untouched (moby forks a
 *    chrooted helper for this; @cairnfs/sys runs the call on a thread with its own cwd);
 * 3. the new mount API with one `lowerdir+` per layer, which has no page limit and is how
 *    stacks deeper than ~128 layers mount (Linux ≥ 6.8).
 * Absolute paths are also skipped when the home holds characters overlayfs would parse
 * (',', ':', '\\', '='): relative paths contain only validated ids and short names.
 */
export function planOverlayMount(req: OverlayMountRequest): MountSpec {
  const limit = (req.pageSize ?? PAGE_SIZE) - 1;
  const base = { type: 'overlay', source: 'overlay', readOnly: req.readOnly } as const;
  if (req.readOnly && req.lowers.length === 0) {
    throw new CairnError('ERR_NOT_SUPPORTED', `layer ${req.id} has no lower layers; a base layer is used through its diff directory, not mounted`, { subject: req.id });
  }

  if (!UNSAFE_PATH_CHARS.test(req.home)) {
    const abs = layerPaths(req, req.home);
    const options = classicOptions(req, abs);
    if (mountData(options).length <= limit) return { ...base, method: 'mount', target: abs.target, cwd: null, options };
  }

  const rel = layerPaths(req, '');
  const relOptions = classicOptions(req, rel);
  if (mountData(relOptions).length <= limit) return { ...base, method: 'mount', target: rel.target, cwd: req.home, options: relOptions };

  if (!req.newMountApi) {
    throw new CairnError('ERR_NOT_SUPPORTED',
      `cannot mount layer ${req.id}: its ${req.lowers.length} lower layers do not fit in one page of mount data, and this kernel lacks the new mount API (fsopen) needed for lowerdir+; lower overlay2.maxDepth to 128`,
      { subject: req.id });
  }
  // Each fsconfig value is one path, never split on ':' or ',', so absolute paths are safe here.
  const abs = layerPaths(req, req.home);
  const options: Array<[string, string | null]> = [...commonHead(req)];
  for (const lower of abs.lowers) options.push(['lowerdir+', lower]);
  if (!req.readOnly) options.push(['upperdir', abs.upper], ['workdir', abs.work]);
  options.push(...tail(req));
  return { ...base, method: 'fsmount', target: abs.target, cwd: null, options };
}

/**
 * A base image layer has nothing to overlay (moby hands out its diff dir as is), but the
 * contract says an image layer is read-only once applied: so cairn binds it read-only.
 */
export function planReadOnlyBind(source: string, target: string): MountSpec {
  return { type: 'bind', source, target, cwd: null, readOnly: true, method: 'mount', options: [] };
}

/** The one function in the driver that mounts. */
export async function performMount(spec: MountSpec): Promise<void> {
  if (spec.program && spec.type === 'overlay') {
    await runMountProgram(spec.program, mountData(spec.options), spec.target, spec.cwd);
    return;
  }
  if (spec.type === 'bind') {
    const { MS_BIND, MS_REMOUNT, MS_RDONLY } = sys.constants;
    await sys.mount(spec.source, spec.target, null, MS_BIND);
    try {
      // A bind mount takes MS_RDONLY only on a remount of itself.
      await sys.mount(spec.source, spec.target, null, MS_BIND | MS_REMOUNT | MS_RDONLY);
    } catch (err) {
      await detachMount(spec.target).catch(() => undefined);
      throw err;
    }
    return;
  }
  if (spec.method === 'fsmount') {
    await sys.fsMount(spec.type, spec.source, spec.options, spec.target, { readOnly: spec.readOnly, ...(spec.cwd ? { cwd: spec.cwd } : {}) });
    return;
  }
  const flags = spec.readOnly ? sys.constants.MS_RDONLY : 0;
  const data = mountData(spec.options);
  if (spec.cwd) await sys.mountAt(spec.cwd, spec.source, spec.target, spec.type, flags, data);
  else await sys.mount(spec.source, spec.target, spec.type, flags, data);
}

/** Runs a FUSE overlay program; it returns once the mount is in place (it daemonizes). */
function runMountProgram(program: string, data: string, target: string, cwd: string | null): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, ['-o', data, target], { cwd: cwd ?? '/', stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(Object.assign(new Error(`${program} -o ${data.length > 300 ? `${data.slice(0, 300)}…` : data} ${target} exited ${code}: ${stderr.trim()}`), { code: 'EIO' }));
    });
  });
}

/** Lazily detaches a mount (moby's put: MNT_DETACH, so a busy mount never blocks a put). */
export async function detachMount(target: string): Promise<void> {
  await sys.umount2(target, sys.constants.MNT_DETACH);
}
