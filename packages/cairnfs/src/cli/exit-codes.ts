import { ErrorCodes, isCairnError, type ErrorCode } from '@cairnfs/core';

/** Exit status for a CairnError code: 10 + its place in ErrorCodes, stable as long as codes are only appended. */
export function exitCodeFor(code: ErrorCode): number {
  return 10 + ErrorCodes.indexOf(code);
}

/** 0 ok, 1 unexpected failure, 2 usage error, 10+ a CairnError code (see docs/cli.md). */
export function exitCodeOf(err: unknown): number {
  return isCairnError(err) ? exitCodeFor(err.code) : 1;
}
