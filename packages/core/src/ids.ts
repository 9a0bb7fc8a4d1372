import { CairnError } from './errors.js';

const ID_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/** True when `id` can name a layer: 1–128 chars of `[A-Za-z0-9_.-]`, not starting with `.` or `-`. */
export function isValidId(id: unknown): id is string {
  return typeof id === 'string' && ID_PATTERN.test(id);
}

/** Throws ERR_INVALID_ID unless `id` is a valid layer id. Call before touching any file. */
export function assertValidId(id: unknown, role = 'layer id'): asserts id is string {
  if (!isValidId(id)) {
    const shown = typeof id === 'string' ? JSON.stringify(id.length > 80 ? `${id.slice(0, 80)}…` : id) : String(id);
    throw new CairnError('ERR_INVALID_ID',
      `invalid ${role} ${shown}: use 1–128 characters of A–Z, a–z, 0–9, '_', '.', '-', not starting with '.' or '-'`,
      { subject: typeof id === 'string' ? id : undefined });
  }
}

/** Validates an optional parent id; `null`, `undefined` and `''` all mean "no parent". */
export function normalizeParent(parent: string | null | undefined): string | null {
  if (parent === undefined || parent === null || parent === '') return null;
  assertValidId(parent, 'parent id');
  return parent;
}
