// Path safety for archive entries, as pure functions (no I/O) so they can be tested on
// their own. The I/O-level rules (never pass through a symlink) live in apply.ts.
import { CairnError } from '../errors.js';

export const WHITEOUT_PREFIX = '.wh.';
export const WHITEOUT_META_PREFIX = '.wh..wh.';
export const WHITEOUT_OPAQUE = '.wh..wh..opq';

function unsafe(name: string, why: string): CairnError {
  return new CairnError('ERR_UNSAFE_ARCHIVE',
    `Refusing archive entry "${printable(name)}": ${why}. The layer would reach outside its directory; it was not applied.`,
    { subject: name });
}

/** Shows control characters (NUL, newlines) in messages instead of emitting them raw. */
export function printable(name: string): string {
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
 */
export function splitEntryPath(name: string): string[] {
  if (name.includes('\0')) throw unsafe(name, 'the name contains a NUL byte');
  if (name.startsWith('/')) throw unsafe(name, 'absolute paths are not allowed in a layer');
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw unsafe(name, "'..' components are not allowed");
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
