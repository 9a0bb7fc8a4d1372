import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { CairnError } from '@cairnfs/core';

/**
 * Docker's overlay2 on-disk layout, as moby's `daemon/graphdriver/overlay2` writes it,
 * so that someone who knows `/var/lib/docker/overlay2` recognises every file and cairn
 * can open a copy of a real Docker store:
 *
 * ```text
 * <home>/                 0710
 *   l/<SHORT>             -> ../<id>/diff   (26 chars of A–Z2–7)
 *   <id>/                 0710
 *     diff/               0755  the layer's own changes (the overlay upper dir)
 *     link                0644  "<SHORT>", no newline
 *     lower               0644  "l/<P1>:l/<P2>…", nearest parent first (absent on base layers)
 *     work/               0700  overlay workdir (absent on base layers)
 *     committed           0600  empty; written when the layer gets a child
 *     merged/                   the mount point, only while mounted
 * ```
 *
 * Everything here is pure (no I/O) so it can be tested without root.
 */

export const LINK_DIR = 'l';
export const DIFF_DIR = 'diff';
export const WORK_DIR = 'work';
export const MERGED_DIR = 'merged';
export const LINK_FILE = 'link';
export const LOWER_FILE = 'lower';
export const COMMITTED_FILE = 'committed';

export const HOME_MODE = 0o710;
export const LAYER_DIR_MODE = 0o710;
export const DIFF_MODE = 0o755;
export const WORK_MODE = 0o700;
/** The `link` and `lower` files' mode (one: they are written together). */
export const LINK_FILE_MODE = 0o644;
export const COMMITTED_FILE_MODE = 0o600;

/** moby's `maxDepth`: a layer may sit on at most this many lower layers unless raised. */
export const DEFAULT_MAX_DEPTH = 128;
/** The kernel's own limit on overlay lower layers (`OVL_MAX_STACK`). */
export const KERNEL_MAX_DEPTH = 500;

/** Length of the `l/` short names: base32 of 16 random bytes, unpadded, as moby makes them. */
export const SHORT_NAME_LENGTH = 26;
const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const SHORT_NAME_PATTERN = /^[A-Z2-7]{26}$/;

/**
 * A fresh `l/` link name: 16 random bytes in RFC 4648 base32 without padding (26
 * characters), the shape moby uses, so names stay short enough that 128 lowers fit in
 * one page of mount data when written relative to the home.
 */
export function generateShortName(bytes: Uint8Array = randomBytes(16)): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(buffer >>> (bits - 5)) & 31];
      bits -= 5;
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32[(buffer << (5 - bits)) & 31];
  return out.slice(0, SHORT_NAME_LENGTH);
}

export function isShortName(name: string): boolean {
  return SHORT_NAME_PATTERN.test(name);
}

/**
 * The directory name of a layer: its id, except for the one valid id that would collide
 * with the `l/` link directory. Docker's ids are 64 hex digits and never `l`, so a Docker
 * store never meets this; cairn stores layer `l` as `.l` (ids cannot start with '.').
 */
export function layerDirName(id: string): string {
  return id === LINK_DIR ? `.${LINK_DIR}` : id;
}

/** The layer id stored in directory `name`, or undefined when `name` is not a layer directory. */
export function idFromDirName(name: string): string | undefined {
  if (name === `.${LINK_DIR}`) return LINK_DIR;
  if (name === LINK_DIR || name.startsWith('.')) return undefined;
  return name;
}

/** Paths of one driver home. Ids must have been validated (core's assertValidId) first. */
export class Layout {
  constructor(readonly home: string) {}

  get linkDir(): string { return join(this.home, LINK_DIR); }
  layerDir(id: string): string { return join(this.home, layerDirName(id)); }
  diffDir(id: string): string { return join(this.layerDir(id), DIFF_DIR); }
  workDir(id: string): string { return join(this.layerDir(id), WORK_DIR); }
  mergedDir(id: string): string { return join(this.layerDir(id), MERGED_DIR); }
  linkFile(id: string): string { return join(this.layerDir(id), LINK_FILE); }
  lowerFile(id: string): string { return join(this.layerDir(id), LOWER_FILE); }
  committedFile(id: string): string { return join(this.layerDir(id), COMMITTED_FILE); }
  /** Absolute path of the `l/<short>` symlink. */
  linkPath(short: string): string { return join(this.home, LINK_DIR, short); }
  /** What an `l/<short>` symlink points at: relative, so a moved or copied home keeps working. */
  linkTarget(id: string): string { return `../${layerDirName(id)}/${DIFF_DIR}`; }

  /** `l/A:l/B…` entries (relative to the home) made absolute, as mount options want them. */
  absoluteLowers(lowers: readonly string[]): string[] {
    return lowers.map((entry) => join(this.home, entry));
  }
}

/** The `lower` entry naming a layer with short name `short`: `l/<short>`. */
export function lowerEntry(short: string): string {
  return `${LINK_DIR}/${short}`;
}

/**
 * The `lower` file content for a child of `parent`: the parent's own link first, then the
 * parent's lowers (nearest parent first), joined by ':' without a newline.
 */
export function childLowers(parentShort: string, parentLowers: readonly string[]): string[] {
  return [lowerEntry(parentShort), ...parentLowers];
}

export function formatLowerFile(lowers: readonly string[]): string {
  return lowers.join(':');
}

/**
 * Parses a `lower` file. Tolerates a trailing newline (hand-edited files) but nothing
 * else: every entry must be `l/<26 base32 chars>`, since an entry becomes a mount path.
 */
export function parseLowerFile(content: string, subject: string): string[] {
  const trimmed = content.replace(/\n$/, '');
  if (trimmed === '') return [];
  const entries = trimmed.split(':');
  for (const entry of entries) {
    const short = entry.startsWith(`${LINK_DIR}/`) ? entry.slice(LINK_DIR.length + 1) : '';
    if (!isShortName(short)) {
      throw new CairnError('ERR_BACKEND_FAILED',
        `layer ${subject} has a corrupt lower file (entry ${JSON.stringify(entry)} is not l/<26 base32 chars>); remove and re-create the layer`,
        { subject });
    }
  }
  return entries;
}

/** Parses a `link` file (tolerating a trailing newline); undefined when it is not a short name. */
export function parseLinkFile(content: string): string | undefined {
  const short = content.replace(/\n$/, '');
  return isShortName(short) ? short : undefined;
}

/**
 * Refuses a child whose stack of lowers would exceed `maxDepth`, as moby's getLower does
 * ("max depth exceeded"): `lowers` is the would-be child's lower list.
 */
export function assertDepth(lowers: readonly string[], maxDepth: number, id: string): void {
  if (lowers.length > maxDepth) {
    throw new CairnError('ERR_MAX_DEPTH',
      `cannot create layer ${id}: it would sit on ${lowers.length} lower layers, more than the limit of ${maxDepth}` +
      (maxDepth < KERNEL_MAX_DEPTH
        ? `; raise it with the driver option overlay2.maxDepth (up to ${KERNEL_MAX_DEPTH}, needs a kernel with the new mount API and lowerdir+, Linux 6.8 or later)`
        : ` (the kernel's overlayfs limit)`),
      { subject: id });
  }
}
