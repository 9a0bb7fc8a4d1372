import { constants as fsConstants } from 'node:fs';
import { mkdir, open, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { xfsGetProjectId, xfsProjectQuotaState, xfsSetProjectId, xfsSetProjectLimit } from '@cairnfs/sys';
import { detectBackingFs, nearestExistingPath } from './backingfs.js';
import { CairnError, errnoCode } from './errors.js';
import { flockUntil } from './flock.js';
import { findMountOf } from './mountinfo.js';
import { STATE_DIR } from './storelock.js';

/**
 * Per-layer size limits with XFS project quotas, as moby's `quota.Control` does for
 * overlay2 and vfs: every limited layer directory gets its own project id (inherited by
 * everything created below it, PROJINHERIT), and the kernel refuses writes past the
 * project's hard block limit with EDQUOT.
 *
 * Like moby, through the kernel interfaces directly (@cairnfs/sys: FS_IOC_FSSETXATTR and
 * quotactl_fd: three syscalls per layer instead of two `xfs_quota` process starts), and with
 * moby's id scheme: the next id starts at the project id of the directory holding the
 * layers + 1, raised above every id an existing layer directory carries (scanned once,
 * when the control is made). Unlike moby, several processes may create layers in one
 * home, and a layer being staged elsewhere is invisible to that scan: the next id is
 * therefore also kept in `${home}/.cairn/xfs-next-project-id`, taken and bumped under a
 * flock of that file (a leaf lock: nothing else is taken while it is held).
 *
 * Needs: an xfs backing filesystem mounted with `prjquota` (or `pquota`) and a kernel
 * with CONFIG_XFS_QUOTA (and quotactl_fd, Linux >= 5.14).
 *
 * Known limit: drivers give the project id to a layer dir while it is staged, then rename
 * it into place. If an admin put the home itself in a project with PROJINHERIT, xfs
 * refuses that rename (EXDEV: a project-inheriting dir only takes entries of its own
 * project); moby sets ids in place and does not meet this.
 */
export interface ProjectQuota {
  /** The mount point of the xfs filesystem holding the home. */
  readonly mountPoint: string;
  /** Gives `dir` a fresh project id and a hard limit of `bytes`; returns the project id. */
  setLimit(dir: string, bytes: number): Promise<number>;
}

/** Mount options that turn on xfs project quota accounting (mountinfo shows `prjquota`). */
const PRJQUOTA_OPTIONS = ['prjquota', 'pquota', 'pqnoenforce', 'pqnoenf'];

export type ProjectQuotaProbe = { ok: true; mountPoint: string } | { ok: false; reason: string };

/**
 * Says whether `home` can have per-layer quotas, and why not in words a person can act
 * on. Touches nothing.
 */
export async function probeXfsProjectQuota(home: string): Promise<ProjectQuotaProbe> {
  const existing = await nearestExistingPath(home);
  const fs = await detectBackingFs(existing);
  if (fs.name !== 'xfs') {
    return { ok: false, reason: `the backing filesystem is ${fs.name}; size quotas need xfs mounted with the prjquota option` };
  }
  const mount = await findMountOf(existing);
  if (!mount) return { ok: false, reason: `cannot find the mount holding ${home} in /proc/self/mountinfo` };
  // The mount options first: they give the fix in words even where the kernel has no quota code at all.
  if (!mount.options.split(',').some((o) => PRJQUOTA_OPTIONS.includes(o))) {
    return { ok: false, reason: `xfs at ${mount.mountPoint} is mounted without project quotas; mount it with -o prjquota (xfs cannot turn quotas on by remount: unmount first)` };
  }
  let state: { accounting: boolean; enforcing: boolean };
  try {
    state = await xfsProjectQuotaState(existing);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOSYS' || code === 'EINVAL' || code === 'ENOTTY' || code === 'EOPNOTSUPP') {
      return { ok: false, reason: `this kernel cannot do xfs quotas (built without CONFIG_XFS_QUOTA, or older than Linux 5.14): quotactl_fd failed with ${code}` };
    }
    return { ok: false, reason: `cannot read the quota state of xfs at ${mount.mountPoint}: ${(err as Error).message}` };
  }
  if (!state.accounting) {
    return { ok: false, reason: `xfs at ${mount.mountPoint} does not account project quotas although mounted with ${mount.options}; remount it with -o prjquota` };
  }
  if (!state.enforcing) {
    return { ok: false, reason: `xfs at ${mount.mountPoint} accounts project quotas but does not enforce them (pqnoenforce); mount it with -o prjquota` };
  }
  return { ok: true, mountPoint: mount.mountPoint };
}

/**
 * The quota control for layers kept as directories directly under `layersDir` (inside
 * `home`), or ERR_QUOTA_UNSUPPORTED with the probe's reason. `what` starts the message.
 */
export async function requireXfsProjectQuota(home: string, what: string, layersDir: string = home, counterFile?: string): Promise<ProjectQuota> {
  const probe = await probeXfsProjectQuota(home);
  if (!probe.ok) throw new CairnError('ERR_QUOTA_UNSUPPORTED', `${what}: ${probe.reason}`, { subject: home });
  try {
    return await XfsQuotaControl.open(probe.mountPoint, layersDir, counterFile ?? null);
  } catch (err) {
    throw new CairnError('ERR_QUOTA_UNSUPPORTED', `${what}: cannot read the project ids under ${layersDir}: ${(err as Error).message}`, { subject: layersDir, cause: err });
  }
}

/**
 * A driver's quota control, made once: at open when the driver has a default size (moby
 * refuses such an option at start-up where it cannot be enforced), else on the first
 * layer that asks for a size. Both overlay2 and vfs hold one.
 */
export class LayerQuotas {
  private control: Promise<ProjectQuota> | null = null;

  constructor(private readonly home: string, private readonly layersDir: string) {}

  /** Makes the control now; ERR_QUOTA_UNSUPPORTED (message starting with `what`) where quotas cannot work. */
  async require(what: string): Promise<ProjectQuota> {
    this.control ??= requireXfsProjectQuota(this.home, what, this.layersDir, join(this.home, STATE_DIR, 'xfs-next-project-id'));
    try {
      return await this.control;
    } catch (err) {
      this.control = null; // the next layer asks again (and says why again)
      throw err;
    }
  }

  /**
   * Puts `to` (a staged replacement of the layer directory `from`) in `from`'s project, so
   * a layer rebuilt by copy keeps its limit. A no-op where `from` has no project of its own.
   * The copy is charged to the project while the old tree still exists.
   */
  async carryOver(from: string, to: string): Promise<void> {
    const id = await xfsGetProjectId(from).catch(() => 0); // not xfs, or no ioctl: nothing to carry
    if (id === 0) return;
    const base = await xfsGetProjectId(this.layersDir).catch(() => 0);
    if (id !== base) await xfsSetProjectId(to, id);
  }

  /** Limits `dir` (a layer's directory, before anything is written into it) to `bytes`. */
  async limit(dir: string, bytes: number, id: string): Promise<number> {
    const control = await this.require(`cannot give layer ${id} a size quota`);
    return control.setLimit(dir, bytes);
  }
}

class XfsQuotaControl implements ProjectQuota {
  private constructor(readonly mountPoint: string, private next: number, private readonly counterFile: string | null) {}

  /** moby's NewControl + findNextProjectID: base id + 1, above every layer's id. */
  static async open(mountPoint: string, layersDir: string, counterFile: string | null): Promise<XfsQuotaControl> {
    const base = await xfsGetProjectId(layersDir).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return 0; // created with the first layer
      throw err;
    });
    let next = base + 1;
    const entries = await readdir(layersDir, { withFileTypes: true }).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return [];
      throw err;
    });
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const id = await xfsGetProjectId(join(layersDir, e.name));
      if (id >= next) next = id + 1;
    }
    return new XfsQuotaControl(mountPoint, next, counterFile);
  }

  /** The next project id: shared through the counter file between processes, else from memory. */
  private async allocate(): Promise<number> {
    if (this.counterFile === null) return this.next++;
    await mkdir(dirname(this.counterFile), { recursive: true, mode: 0o700 });
    const handle = await open(this.counterFile, fsConstants.O_RDWR | fsConstants.O_CREAT, 0o600);
    try {
      if (!(await flockUntil(handle.fd, true, Date.now() + 30_000, this.counterFile))) {
        throw new Error(`${this.counterFile} stayed locked for 30 s`);
      }
      const stored = Number((await handle.readFile('utf8')).trim());
      const id = Math.max(this.next, Number.isSafeInteger(stored) ? stored : 0);
      const text = `${id + 1}\n`;
      await handle.truncate(0);
      await handle.write(text, 0, 'utf8');
      this.next = id + 1;
      return id;
    } finally {
      await handle.close(); // drops the flock
    }
  }

  async setLimit(dir: string, bytes: number): Promise<number> {
    // Taken before the first await of the caller's work, so concurrent creates never share an id.
    const id = await this.allocate();
    try {
      await xfsSetProjectId(dir, id);
      await xfsSetProjectLimit(dir, id, bytes);
    } catch (err) {
      throw new CairnError('ERR_BACKEND_FAILED', `cannot set a ${bytes}-byte project quota (project ${id}) on ${dir}: ${(err as Error).message}`, { subject: dir, cause: err });
    }
    return id;
  }
}
