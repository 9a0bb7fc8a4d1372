/**
 * Every failure cairn raises is a {@link CairnError} with one of these stable codes.
 * Callers branch on `code`, never on the message.
 */
export const ErrorCodes = [
  'ERR_INVALID_ID',
  'ERR_LAYER_NOT_FOUND',
  'ERR_LAYER_EXISTS',
  'ERR_PARENT_NOT_FOUND',
  'ERR_LAYER_IN_USE',
  'ERR_NOT_MOUNTED',
  'ERR_NOT_SUPPORTED',
  'ERR_PREREQUISITES',
  'ERR_INCOMPATIBLE_FS',
  'ERR_MAX_DEPTH',
  'ERR_UNSAFE_ARCHIVE',
  'ERR_INVALID_ARCHIVE',
  'ERR_QUOTA_UNSUPPORTED',
  'ERR_NO_SPACE',
  'ERR_LOCKED',
  'ERR_MULTIPLE_PRIOR_DRIVERS',
  /** A bad option, reference or root (the message names it and what is accepted). */
  'ERR_INVALID_OPTION',
  /** No driver is registered by that name. */
  'ERR_DRIVER_NOT_FOUND',
  /** A kernel or backend tool refused an operation for a reason none of the codes above names (the message carries its output). */
  'ERR_BACKEND_FAILED',
  /** No such image or tag, locally or in a registry. */
  'ERR_IMAGE_NOT_FOUND',
  /** A registry answered with an error: its HTTP status and error code are on the error as `status` / `registryCode`. */
  'ERR_REGISTRY',
  /** Registry credentials are missing or were refused. */
  'ERR_AUTH',
  /** A registry could not be reached after retries. */
  'ERR_NETWORK',
] as const;

export type ErrorCode = (typeof ErrorCodes)[number];

export interface CairnErrorDetails {
  /** The layer id, path, archive entry or option the error is about. */
  subject?: string;
  /** The underlying error (an errno error from fs or @cairnfs/sys, usually). */
  cause?: unknown;
  /** ERR_REGISTRY (and registry ERR_AUTH / ERR_IMAGE_NOT_FOUND): the HTTP status the registry answered. */
  status?: number;
  /** ERR_REGISTRY: the registry's error code (`MANIFEST_UNKNOWN`, `DENIED`, …) when it sent one. */
  registryCode?: string;
}

/** The one error class of the library: a stable {@link ErrorCode} plus a message a person can act on. */
export class CairnError extends Error {
  readonly code: ErrorCode;
  readonly subject: string | undefined;
  /** The HTTP status of a registry's answer, on registry errors. */
  readonly status: number | undefined;
  /** The registry's own error code (OCI distribution `errors[0].code`), on registry errors. */
  readonly registryCode: string | undefined;

  constructor(code: ErrorCode, message: string, details: CairnErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'CairnError';
    this.code = code;
    this.subject = details.subject;
    this.status = details.status;
    this.registryCode = details.registryCode;
  }
}

/**
 * The driver's "no such layer": ERR_LAYER_NOT_FOUND naming the layer, and `where` the
 * driver looked when it is not the obvious place ("in /var/lib/cairn/vfs").
 */
export function layerNotFound(id: string, where?: string): CairnError {
  return new CairnError('ERR_LAYER_NOT_FOUND', `layer ${id} does not exist${where ? ` ${where}` : ''}`, { subject: id });
}

/**
 * An archive fault the addon (@cairnfs/sys) threw, `{ cairnCode, message, subject }`, as the
 * CairnError it stands for; anything else (an errno error) is returned as it is.
 */
export function fromAddonFault(err: unknown): unknown {
  const e = err as { cairnCode?: string; subject?: string; message?: string } | null;
  if (e && typeof e.cairnCode === 'string') {
    return new CairnError(e.cairnCode as ErrorCode, e.message ?? 'invalid layer archive', { subject: e.subject ?? '' });
  }
  return err;
}

export function isCairnError(err: unknown, code?: ErrorCode): err is CairnError {
  return err instanceof CairnError && (code === undefined || err.code === code);
}

/** The errno code of a Node or @cairnfs/sys error (`'ENOENT'`, …), or undefined. */
export function errnoCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; errno?: unknown } | null;
  // Node 20's libuv has no name for EDQUOT (122): errno -122 comes with code 'UNKNOWN' or
  // 'Unknown system error -122', depending on the call.
  if (e && (e.errno === -122 || e.errno === 122)) return 'EDQUOT';
  return typeof e?.code === 'string' ? e.code : undefined;
}

/**
 * Turns an out-of-space errno into ERR_NO_SPACE; anything else is returned unchanged.
 * Drivers wrap their write paths with this so a full disk is a value, not a crash.
 */
export function translateSpaceError(err: unknown, what: string): unknown {
  const code = errnoCode(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new CairnError('ERR_NO_SPACE',
      `${what}: no space left (${code}). Free space on the backing filesystem or raise the layer's size quota.`,
      { cause: err });
  }
  return err;
}
