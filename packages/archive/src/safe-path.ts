// Path safety for archive entries, as pure functions (no I/O) so they can be tested on
// their own. The I/O-level rules (never pass through a symlink) live in apply.ts.
import { CairnError } from '@cairnfs/core';

export const WHITEOUT_PREFIX = '.wh.';
export const WHITEOUT_META_PREFIX = '.wh..wh.';
export const WHITEOUT_OPAQUE = '.wh..wh..opq';

/** Linux limits: a whole path (PATH_MAX, with its NUL) and one component (NAME_MAX), in bytes. */
export const PATH_MAX = 4096;
export const NAME_MAX = 255;

function invalid(name: string, why: string): CairnError {
  const shown = name.length > 120 ? `${printable(name.slice(0, 60))}…${printable(name.slice(-40))}` : printable(name);
  return new CairnError('ERR_INVALID_ARCHIVE', `Archive entry "${shown}" ${why}; no Linux filesystem can hold it. The layer was not applied.`, { subject: name });
}

function unsafe(name: string, why: string): CairnError {
  return new CairnError('ERR_UNSAFE_ARCHIVE',
    `Refusing archive entry "${printable(name)}": ${why}. The layer would reach outside its directory; it was not applied.`,
    { subject: name });
}

/** Shows control characters (NUL, newlines) in messages instead of emitting them raw. */
export function printable(name: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return name.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * Splits an archive path into its components, relative to the layer root.
 *
 * Normalises `./a//b/` to `['a', 'b']`; `''`, `.` and `./` are the root (`[]`).
 * Refuses (ERR_UNSAFE_ARCHIVE) a NUL anywhere, any `..` component, and absolute names.
 * Absolute names are refused rather than stripped (moby strips the leading '/',
 * containerd refuses): a tool that writes `/etc/passwd` into a layer is broken or
 * hostile, and refusing cannot turn a harmless-looking name into a surprising path.
 * Names longer than PATH_MAX or with a component longer than NAME_MAX are
 * ERR_INVALID_ARCHIVE, checked before anything is created: otherwise the apply would
 * build thousands of nested directories before the kernel said ENAMETOOLONG.
 */
export function splitEntryPath(name: string): string[] {
  if (name.includes('\0')) throw unsafe(name, 'the name contains a NUL byte');
  if (name.startsWith('/')) throw unsafe(name, 'absolute paths are not allowed in a layer');
  if (Buffer.byteLength(name) >= PATH_MAX) throw invalid(name, `is longer than PATH_MAX (${PATH_MAX} bytes with its NUL)`);
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw unsafe(name, "'..' components are not allowed");
    if (part.length > NAME_MAX / 4 && Buffer.byteLength(part) > NAME_MAX) throw invalid(name, `has a component longer than NAME_MAX (${NAME_MAX} bytes)`);
    parts.push(part);
  }
  return parts;
}

/** What a base name means in an OCI layer. */
export type WhiteoutKind =
  | { kind: 'normal' }
  | { kind: 'opaque' } // `.wh..wh..opq`: hide everything below the directory from lower layers
  | { kind: 'whiteout'; target: string } // `.wh.<target>`: <target> was deleted
  | { kind: 'meta' }; // other `.wh..wh.*` names: aufs bookkeeping, never applied

/** Classifies a base name; refuses whiteouts that would name `.`, `..` or nothing. */
export function classifyWhiteout(base: string, fullName = base): WhiteoutKind {
  if (!base.startsWith(WHITEOUT_PREFIX)) return { kind: 'normal' };
  if (base === WHITEOUT_OPAQUE) return { kind: 'opaque' };
  if (base.startsWith(WHITEOUT_META_PREFIX)) return { kind: 'meta' };
  const target = base.slice(WHITEOUT_PREFIX.length);
  if (target === '' || target === '.' || target === '..') {
    throw unsafe(fullName, `a whiteout must name an entry of its directory, not "${target}"`);
  }
  return { kind: 'whiteout', target };
}

/** The ERR_UNSAFE_ARCHIVE error for I/O-level findings (symlinks in the way, …). */
export function unsafeEntry(name: string, why: string): CairnError {
  return unsafe(name, why);
}
