// Turning what a registry answers into CairnErrors a person can act on. The OCI
// distribution spec's error body is `{"errors":[{"code","message","detail"}]}`; its code
// (MANIFEST_UNKNOWN, DENIED, …) and the HTTP status go on the error as registryCode/status.
import { CairnError, type ErrorCode } from '@cairnfs/core';

export interface RegistryErrorBody {
  code?: string;
  message?: string;
}

/** The first error of a distribution error body, if the text is one. */
export function parseErrorBody(text: string): RegistryErrorBody {
  try {
    const doc = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    const e = Array.isArray(doc.errors) ? doc.errors[0] : undefined;
    if (e) return { ...(typeof e.code === 'string' ? { code: e.code } : {}), ...(typeof e.message === 'string' ? { message: e.message } : {}) };
  } catch { /* not JSON: a proxy's HTML page, say */ }
  return {};
}

/** A printable excerpt of an answer body that was not a distribution error. */
function excerpt(text: string): string {
  const t = text.replace(/\s+/g, ' ').trim();
  return t.length > 200 ? `${t.slice(0, 200)}…` : t;
}

export function registryError(code: ErrorCode, message: string, status: number | undefined, body: RegistryErrorBody | string = {}, subject?: string): CairnError {
  const parsed = typeof body === 'string' ? parseErrorBody(body) : body;
  const said = parsed.code || parsed.message
    ? ` (registry says ${[parsed.code, parsed.message].filter(Boolean).join(': ')})`
    : typeof body === 'string' && body.trim() ? ` (answer: ${excerpt(body)})` : '';
  return new CairnError(code, `${message}${status !== undefined ? ` [HTTP ${status}]` : ''}${said}`, {
    ...(subject !== undefined ? { subject } : {}),
    ...(status !== undefined ? { status } : {}),
    ...(parsed.code ? { registryCode: parsed.code } : {}),
  });
}

/** An answer that breaks the protocol or the content's own claims (size, digest, JSON). */
export function corrupt(what: string, subject?: string): CairnError {
  return new CairnError('ERR_INVALID_ARCHIVE', `${what}; the registry served corrupt or tampered content, nothing was kept`, subject !== undefined ? { subject } : {});
}

/** True for errno codes of a connection that failed or broke: worth a retry. */
export function isTransient(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && [
    'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN',
    'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CLOSED',
    'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  ].includes(code);
}

/** True when the signal's abort (not a network failure) ended the operation. */
export function isAbort(err: unknown, signal?: AbortSignal): boolean {
  return !!signal?.aborted || (err as { name?: string } | null)?.name === 'AbortError';
}
