import { readFile, realpath } from 'node:fs/promises';

/** One line of `/proc/<pid>/mountinfo` (see proc(5)), with the kernel's octal escapes decoded. */
export interface MountInfoEntry {
  mountId: number;
  parentId: number;
  /** `major:minor` of the device (st_dev of files in this mount). */
  device: string;
  /** The directory of the source filesystem that is mounted here (`/` unless a bind of a subtree). */
  root: string;
  /** Where it is mounted, relative to the process's root. */
  mountPoint: string;
  /** Per-mount flags: `rw,nosuid,relatime`. */
  mountOptions: string;
  /** Optional fields such as `shared:1`, `master:2`. */
  optionalFields: string[];
  /** `ext4`, `overlay`, `fuse.zfs`, … */
  fsType: string;
  /** Device or dataset name (`/dev/vda`, `overlay`, `pool/ds`). */
  source: string;
  /** Filesystem (superblock) options, where overlay's `lowerdir=…,upperdir=…` appear. */
  options: string;
}

/**
 * The kernel escapes space, tab, newline and backslash in paths and options as `\ooo`
 * (fs/proc_namespace.c uses mangle/seq_path with " \t\n\\"), so a mount point with a
 * space reads `/mnt/a\040b`. Any `\` followed by three octal digits is decoded.
 */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses mountinfo text; lines that do not have the documented shape are skipped. */
export function parseMountInfo(text: string): MountInfoEntry[] {
  const entries: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const fields = line.split(' ');
    // The optional fields run until a lone '-', so the separator position varies.
    const dash = fields.indexOf('-', 6);
    if (dash < 0 || fields.length < dash + 3) continue;
    entries.push({
      mountId: Number(fields[0]),
      parentId: Number(fields[1]),
      device: fields[2]!,
      root: unescapeMountField(fields[3]!),
      mountPoint: unescapeMountField(fields[4]!),
      mountOptions: unescapeMountField(fields[5]!),
      optionalFields: fields.slice(6, dash),
      fsType: unescapeMountField(fields[dash + 1]!),
      source: unescapeMountField(fields[dash + 2]!),
      options: unescapeMountField(fields.slice(dash + 3).join(' ')),
    });
  }
  return entries;
}

/** The mount table of this process (or of `pid`), in the kernel's order: later entries are mounted on top of earlier ones. */
export async function readMountInfo(pid: number | 'self' = 'self'): Promise<MountInfoEntry[]> {
  return parseMountInfo(await readFile(`/proc/${pid}/mountinfo`, 'utf8'));
}

function isUnder(path: string, mountPoint: string): boolean {
  if (mountPoint === '/') return true;
  return path === mountPoint || path.startsWith(`${mountPoint}/`);
}

/**
 * The mount that holds `path` (which must exist): the entry with the longest mount
 * point that is a prefix of the resolved path, and among several mounts on that same
 * point the last one, which is the one on top.
 */
export async function findMountOf(path: string, table?: MountInfoEntry[]): Promise<MountInfoEntry | undefined> {
  const resolved = await realpath(path);
  const mounts = table ?? await readMountInfo();
  let best: MountInfoEntry | undefined;
  for (const entry of mounts) {
    if (!isUnder(resolved, entry.mountPoint)) continue;
    if (!best || entry.mountPoint.length >= best.mountPoint.length) best = entry;
  }
  return best;
}
