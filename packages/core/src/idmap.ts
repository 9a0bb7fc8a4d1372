// Id maps (IdMappings: container id -> host id, as the OCI runtime spec writes them): the
// checks, lookups and the canonical text every driver uses for get/applyDiff/diff with
// `idMappings`, and the user namespace an id-mapped mount is made with.
import { closeSync } from 'node:fs';
import { mkdir, rmdir } from 'node:fs/promises';
import * as sys from '@cairnfs/sys';
import type { IdMap, IdMappings } from './driver.js';
import { CairnError } from './errors.js';

const MAX_ID = 2 ** 32 - 1;
/** The kernel takes at most 340 lines in a uid_map or gid_map (Linux 4.15 and later). */
const MAX_RANGES = 340;

function checkRanges(ranges: unknown, what: string): IdMap[] {
  if (!Array.isArray(ranges) || ranges.length === 0) {
    throw new CairnError('ERR_INVALID_OPTION', `idMappings.${what} must be a non-empty array of { containerId, hostId, size }`, { subject: what });
  }
  if (ranges.length > MAX_RANGES) {
    throw new CairnError('ERR_INVALID_OPTION', `idMappings.${what} has ${ranges.length} ranges; the kernel takes at most ${MAX_RANGES}`, { subject: what });
  }
  const out: IdMap[] = [];
  for (const [i, r] of (ranges as unknown[]).entries()) {
    const m = r as Partial<IdMap> | null;
    const ok = (n: unknown, min: number) => typeof n === 'number' && Number.isInteger(n) && n >= min && n <= MAX_ID;
    if (!m || !ok(m.containerId, 0) || !ok(m.hostId, 0) || !ok(m.size, 1) ||
        m.containerId! + m.size! - 1 > MAX_ID || m.hostId! + m.size! - 1 > MAX_ID) {
      throw new CairnError('ERR_INVALID_OPTION',
        `idMappings.${what}[${i}] must be { containerId, hostId, size } with integers, size >= 1, every id below 2^32; got ${JSON.stringify(r)}`,
        { subject: what });
    }
    out.push({ containerId: m.containerId!, hostId: m.hostId!, size: m.size! });
  }
  // As the kernel: neither the container side nor the host side of two ranges may overlap.
  for (const side of ['containerId', 'hostId'] as const) {
    const sorted = [...out].sort((a, b) => a[side] - b[side]);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i]![side] < sorted[i - 1]![side] + sorted[i - 1]!.size) {
        throw new CairnError('ERR_INVALID_OPTION', `idMappings.${what}: two ranges overlap on the ${side === 'hostId' ? 'host' : 'container'} side`, { subject: what });
      }
    }
  }
  return out;
}

/** Checks `maps` as the kernel would take them; returns a plain copy. ERR_INVALID_OPTION names what is wrong. */
export function validateIdMappings(maps: IdMappings): IdMappings {
  if (typeof maps !== 'object' || maps === null) {
    throw new CairnError('ERR_INVALID_OPTION', 'idMappings must be { uidMap: IdMap[], gidMap: IdMap[] }', { subject: 'idMappings' });
  }
  return { uidMap: checkRanges(maps.uidMap, 'uidMap'), gidMap: checkRanges(maps.gidMap, 'gidMap') };
}

/** A canonical text for `maps` (`u:0:100000:65536,g:0:100000:65536`), equal for equal maps; stored on layers. */
export function idMappingsKey(maps: IdMappings): string {
  const part = (kind: string, ranges: readonly IdMap[]) =>
    [...ranges].sort((a, b) => a.containerId - b.containerId).map((r) => `${kind}:${r.containerId}:${r.hostId}:${r.size}`);
  return [...part('u', maps.uidMap), ...part('g', maps.gidMap)].join(',');
}

/** The maps an {@link idMappingsKey} text stands for; ERR_BACKEND_FAILED when it is not one (a corrupt record). */
export function parseIdMappingsKey(key: string, subject = 'id map'): IdMappings {
  const out: IdMappings = { uidMap: [], gidMap: [] };
  for (const part of key.trim().split(',')) {
    const m = /^([ug]):(\d+):(\d+):(\d+)$/.exec(part);
    if (!m) throw new CairnError('ERR_BACKEND_FAILED', `${subject} holds a corrupt id map record ${JSON.stringify(key)}`, { subject });
    (m[1] === 'u' ? out.uidMap : out.gidMap).push({ containerId: Number(m[2]), hostId: Number(m[3]), size: Number(m[4]) });
  }
  return validateIdMappings(out);
}

export function sameIdMappings(a: IdMappings | null | undefined, b: IdMappings | null | undefined): boolean {
  if (!a || !b) return !a && !b;
  return idMappingsKey(a) === idMappingsKey(b);
}

/** The id `id` maps to, container → host (`toHost`) or back; undefined when no range holds it. */
export function mapId(ranges: readonly IdMap[], id: number, toHost: boolean): number | undefined {
  for (const r of ranges) {
    const from = toHost ? r.containerId : r.hostId;
    if (id >= from && id - from < r.size) return (toHost ? r.hostId : r.containerId) + (id - from);
  }
  return undefined;
}

/** True when every range maps an id to itself (such a map changes nothing). */
export function isIdentityMapping(maps: IdMappings): boolean {
  return [...maps.uidMap, ...maps.gidMap].every((r) => r.containerId === r.hostId);
}

/** User namespaces kept for reuse, by map (idMappingsKey); least recently used first. */
const namespaces = new Map<string, { fd: number; users: number }>();
/** Most idle namespaces kept: a host runs few distinct maps at once, and each costs one fd. */
const MAX_IDLE_NAMESPACES = 8;

/**
 * Runs `fn` with the fd of a user namespace whose maps are `maps` (for
 * mount_setattr(MOUNT_ATTR_IDMAP)). Mounts made with it keep their own reference. The
 * namespace is kept for the next call with the same maps: making one clones a process
 * (about 2 ms, on the event loop), which was most of what an id-mapped get cost over a
 * plain one.
 */
export async function withUserNamespace<T>(maps: IdMappings, fn: (usernsFd: number) => Promise<T>): Promise<T> {
  const key = idMappingsKey(maps);
  let entry = namespaces.get(key);
  if (entry) namespaces.delete(key); // re-inserted below as the most recent
  else entry = { fd: sys.makeUserNamespace(maps), users: 0 };
  namespaces.set(key, entry);
  entry.users++;
  try {
    return await fn(entry.fd);
  } finally {
    entry.users--;
    trimNamespaces();
  }
}

function trimNamespaces(): void {
  let excess = namespaces.size - MAX_IDLE_NAMESPACES;
  for (const [key, e] of namespaces) {
    if (excess <= 0) break;
    if (e.users > 0) continue;
    namespaces.delete(key);
    closeSync(e.fd);
    excess--;
  }
}

/**
 * Whether a directory on the filesystem of `dir` (which must exist and be writable) can be
 * attached as an id-mapped mount here: null when it can, else why not, in words a person
 * can act on. Changes nothing in `dir` and mounts nothing.
 * Refusals come from the filesystem (no FS_ALLOW_IDMAP: EINVAL), the kernel (< 5.12:
 * ENOSYS) or the caller's privilege (a filesystem not mounted in the caller's user
 * namespace: EPERM, as for rootless callers on the host's disks).
 */
export async function probeIdmappedMounts(dir: string): Promise<string | null> {
  // A detached id-mapped clone of `dir` itself: no scratch dir, nothing ever attached, so a
  // process killed during the probe leaves nothing behind.
  const self = process.geteuid?.() ?? 0;
  const maps = { uidMap: [{ containerId: 0, hostId: self, size: 1 }], gidMap: [{ containerId: 0, hostId: process.getegid?.() ?? 0, size: 1 }] };
  let fd: number;
  try {
    fd = sys.makeUserNamespace(maps);
  } catch (err) {
    return `cannot make a user namespace to id-map with (${(err as Error).message}); user namespaces may be disabled (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone)`;
  }
  try {
    await sys.idmappedMountCheck(dir, fd);
    return null;
  } catch (err) {
    const code = (err as { code?: string }).code;
    const why = code === 'ENOSYS' ? 'the kernel has no mount_setattr (Linux 5.12 or later is needed)'
      : code === 'EINVAL' ? 'the filesystem cannot be id-mapped (no FS_ALLOW_IDMAP)'
      : code === 'EPERM' ? 'id-mapped mounts of this filesystem need CAP_SYS_ADMIN where it was mounted (a rootless caller on a host filesystem cannot)'
      : 'the kernel refused';
    return `an id-mapped mount of ${dir} failed: ${why} (${(err as Error).message})`;
  } finally {
    closeSync(fd);
  }
}

/**
 * Attaches `source` at `target` (made if missing) as an id-mapped view through `maps`:
 * the one step vfs and btrfs take for `get(id, { idMappings })`. ERR_NOT_SUPPORTED (the
 * kernel's reason in the message) when the kernel or filesystem refuses; `target` is
 * removed again then.
 */
export async function attachIdmappedView(source: string, target: string, maps: IdMappings, opts: { readOnly: boolean; subject: string }): Promise<void> {
  await mkdir(target, { recursive: true, mode: 0o700 });
  try {
    await withUserNamespace(maps, (fd) => sys.idmappedMount(source, target, fd, { readOnly: opts.readOnly }));
  } catch (err) {
    await rmdir(target).catch(() => undefined);
    throw new CairnError('ERR_NOT_SUPPORTED', `cannot show layer ${opts.subject} through an id map: ${(err as Error).message}`, { subject: opts.subject, cause: err });
  }
}

/** For drivers that cannot show a layer id-mapped: a get with idMappings is refused, never silently ignored. */
export function refuseIdMappings(driver: string, id: string, maps: IdMappings | undefined): void {
  if (maps) {
    throw new CairnError('ERR_NOT_SUPPORTED',
      `the ${driver} driver cannot show layer ${id} through an id map yet; use overlay2, vfs or btrfs for id-mapped containers, or run the container with the image's own ids`,
      { subject: id });
  }
}
