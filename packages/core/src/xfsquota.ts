import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { detectBackingFs, nearestExistingPath } from './backingfs.js';
import { CairnError } from './errors.js';
import { findMountOf } from './mountinfo.js';

const run = promisify(execFile);

/**
 * Per-layer size limits with XFS project quotas, as moby's `quota.Control` does for
 * overlay2 and vfs: every limited layer directory gets its own project id (inherited by
 * everything created below it), and the kernel refuses writes past the project's hard
 * block limit with EDQUOT.
 *
 * moby issues quotactl(2) and the FS_IOC_FSSETXATTR ioctl through cgo; cairn runs
 * `xfs_quota` (xfsprogs) instead: two process starts per limited layer (~10 ms), no
 * native code, and the same on-disk result.
 *
 * Needs: an xfs backing filesystem mounted with `prjquota` (or `pquota`/`pqnoenforce`),
 * a kernel with CONFIG_XFS_QUOTA, and `xfs_quota` on PATH.
 */
export interface ProjectQuota {
  /** The mount point of the xfs filesystem holding the home. */
  readonly mountPoint: string;
  /** Gives `dir` a fresh project id and a hard limit of `bytes`; returns the project id. */
  setLimit(dir: string, bytes: number): Promise<number>;
}

export type ProjectQuotaProbe = { ok: true; quota: ProjectQuota } | { ok: false; reason: string };

const PRJQUOTA_OPTIONS = ['prjquota', 'pquota', 'pqnoenforce'];

function toolEnv(): NodeJS.ProcessEnv {
  const path = process.env.PATH ?? '';
  return { ...process.env, PATH: `${path}:/usr/sbin:/sbin` };
}

async function xfsQuota(mountPoint: string, command: string): Promise<string> {
  const { stdout } = await run('xfs_quota', ['-x', '-c', command, mountPoint], { env: toolEnv() });
  return stdout;
}

/**
 * Says whether `home` can have per-layer quotas, and why not in words a person can act
 * on. Touches nothing.
 */
export async function probeXfsProjectQuota(home: string): Promise<ProjectQuotaProbe> {
  const fs = await detectBackingFs(home);
  if (fs.name !== 'xfs') {
    return { ok: false, reason: `the backing filesystem is ${fs.name}; size quotas need xfs mounted with the prjquota option` };
  }
  const mount = await findMountOf(await nearestExistingPath(home));
  if (!mount) return { ok: false, reason: `cannot find the mount holding ${home} in /proc/self/mountinfo` };
  const opts = mount.options.split(',');
  if (!opts.some((o) => PRJQUOTA_OPTIONS.includes(o))) {
    return { ok: false, reason: `xfs at ${mount.mountPoint} is mounted without project quotas; remount it with -o prjquota (a remount needs an unmount on xfs)` };
  }
  try {
    await xfsQuota(mount.mountPoint, 'state -p');
  } catch (err) {
    const missing = (err as { code?: unknown }).code === 'ENOENT';
    return { ok: false, reason: missing ? 'xfs_quota is not installed; install xfsprogs' : `xfs_quota cannot read project quota state on ${mount.mountPoint}: ${(err as Error).message}` };
  }
  return { ok: true, quota: new XfsQuotaControl(mount.mountPoint) };
}

/** Throws ERR_QUOTA_UNSUPPORTED with the probe's reason when quotas are not available. */
export async function requireXfsProjectQuota(home: string, what: string): Promise<ProjectQuota> {
  const probe = await probeXfsProjectQuota(home);
  if (!probe.ok) throw new CairnError('ERR_QUOTA_UNSUPPORTED', `${what}: ${probe.reason}`, { subject: home });
  return probe.quota;
}

/**
 * Project ids are handed out above the largest id the filesystem already reports, so
 * layers of several homes (or other users of project quotas) never share one.
 */
class XfsQuotaControl implements ProjectQuota {
  private next: number | null = null;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(readonly mountPoint: string) {}

  setLimit(dir: string, bytes: number): Promise<number> {
    // One at a time: id allocation must not race.
    const job = this.chain.then(async () => {
      const id = await this.allocate();
      try {
        await xfsQuota(this.mountPoint, `project -s -p ${quoteArg(dir)} ${id}`);
        await xfsQuota(this.mountPoint, `limit -p bhard=${Math.max(bytes, 4096)} ${id}`);
      } catch (err) {
        throw new CairnError('ERR_QUOTA_UNSUPPORTED', `cannot set a ${bytes}-byte project quota on ${dir}: ${(err as Error).message}`, { subject: dir, cause: err });
      }
      return id;
    });
    this.chain = job.catch(() => undefined);
    return job;
  }

  private async allocate(): Promise<number> {
    if (this.next === null) {
      const report = await xfsQuota(this.mountPoint, 'report -p -n -N');
      let max = 0;
      for (const line of report.split('\n')) {
        const m = /^#(\d+)\s/.exec(line.trim());
        if (m) max = Math.max(max, Number(m[1]));
      }
      this.next = max + 1;
    }
    return this.next++;
  }
}

/** xfs_quota splits its -c argument on spaces; a path with a space must be quoted. */
function quoteArg(path: string): string {
  if (/["\\]/.test(path)) throw new CairnError('ERR_QUOTA_UNSUPPORTED', `cannot pass path ${JSON.stringify(path)} to xfs_quota`, { subject: path });
  return /\s/.test(path) ? `"${path}"` : path;
}
