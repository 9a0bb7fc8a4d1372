// XFS project quota calls (native/quota.cc), used by @cairnfs/core's xfsquota.ts for the
// overlay2 and vfs `size` options. Async on the libuv pool; failures are the same
// Node-style errors as the rest of this package (`syscall`: 'FS_IOC_FSSETXATTR',
// 'quotactl_fd', …). quotactl_fd needs Linux >= 5.14.
import { native } from './native.js';

const quota = native;

/** FS_QUOTA_PDQ_ACCT / FS_QUOTA_PDQ_ENFD from <linux/dqblk_xfs.h>. */
const PDQ_ACCT = 1 << 4;
const PDQ_ENFD = 1 << 5;

/** The project id of a file or directory (FS_IOC_FSGETXATTR); 0 when it has none. */
export function xfsGetProjectId(path: string): Promise<number> {
  return quota.xfsGetProjectId(path);
}

/** Puts `path` in project `projectId` and sets PROJINHERIT, so what is created below a directory joins it. */
export function xfsSetProjectId(path: string, projectId: number): Promise<void> {
  return quota.xfsSetProjectId(path, projectId);
}

/** Sets the hard (and soft) block limit of project `projectId` on the filesystem holding `path`. */
export function xfsSetProjectLimit(path: string, projectId: number, bytes: number): Promise<void> {
  return quota.xfsSetProjectLimit(path, projectId, bytes);
}

/** The hard block limit of project `projectId` in bytes; 0 when it has none. */
export function xfsGetProjectLimit(path: string, projectId: number): Promise<number> {
  return quota.xfsGetProjectLimit(path, projectId);
}

/** Whether the filesystem holding `path` accounts and enforces project quotas (Q_XGETQSTATV). */
export async function xfsProjectQuotaState(path: string): Promise<{ accounting: boolean; enforcing: boolean }> {
  const flags = await quota.xfsQuotaState(path);
  return { accounting: (flags & PDQ_ACCT) !== 0, enforcing: (flags & PDQ_ENFD) !== 0 };
}
