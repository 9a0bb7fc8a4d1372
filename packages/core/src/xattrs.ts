import { lgetxattrSync, llistxattrSync } from '@cairnfs/sys';
import { errnoCode } from './errors.js';

/** Every xattr of `path` itself (never a symlink's target), by name; empty where xattrs are unsupported. */
export function readXattrs(path: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let names: string[];
  try {
    names = llistxattrSync(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOTSUP' || errnoCode(err) === 'EOPNOTSUPP') return out;
    throw err;
  }
  for (const name of names) {
    const value = lgetxattrSync(path, name);
    if (value !== null) out.set(name, value);
  }
  return out;
}

/** True when two xattr sets (as readXattrs returns them) hold the same names with the same bytes. */
export function sameXattrMaps(a: ReadonlyMap<string, Buffer>, b: ReadonlyMap<string, Buffer>): boolean {
  if (a.size !== b.size) return false;
  for (const [name, value] of a) {
    const other = b.get(name);
    if (!other || !other.equals(value)) return false;
  }
  return true;
}
