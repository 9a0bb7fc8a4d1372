// PAX extended header records: `"<len> <key>=<value>\n"`, where <len> counts the whole
// record in bytes. Values are kept as bytes: SCHILY.xattr values are binary (a
// security.capability blob is not UTF-8), and decoding them as text — what tar-stream
// does — corrupts them. Only keys we know to be text are decoded.

/** One record, in archive order (GNU sparse 0.0 repeats keys, so order matters). */
export type PaxRecord = [key: string, value: Buffer];

/** Parses the body of an 'x' or 'g' header; returns null when it is malformed. */
export function parsePax(body: Buffer): PaxRecord[] | null {
  const records: PaxRecord[] = [];
  const ok = scanPax(body, (key, start, end) => { records.push([key, body.subarray(start, end)]); });
  return ok ? records : null;
}

/**
 * Walks the records of a PAX body without building them: `onRecord` gets each key, the
 * byte range of its value in `body` and the key's length in bytes. The parser's hot path (GNU tar writes an 'x'
 * header before every entry) uses it to decode values straight from the input chunk.
 * Returns false when the body is malformed (records before the fault were reported).
 */
export function scanPax(body: Buffer, onRecord: (key: string, valueStart: number, valueEnd: number, keyBytes: number) => void): boolean {
  let pos = 0;
  const size = body.length;
  while (pos < size) {
    // Trailing NUL padding after the last record is tolerated (some writers pad).
    if (body[pos] === 0) break;
    let len = 0;
    let i = pos;
    while (i < size && body[i]! >= 0x30 && body[i]! <= 0x39) {
      len = len * 10 + (body[i]! - 0x30);
      i++;
      if (len > size) return false;
    }
    if (i === pos || body[i] !== 0x20 || len <= i - pos + 1 || pos + len > size) return false;
    const end = pos + len;
    if (body[end - 1] !== 0x0a) return false;
    const eq = body.indexOf(0x3d, i + 1);
    if (eq < 0 || eq >= end - 1 || eq === i + 1) return false;
    onRecord(body.toString('utf8', i + 1, eq), eq + 1, end - 1, eq - i - 1);
    pos = end;
  }
  return true;
}

/** Encodes one record, computing the self-including length prefix. */
export function encodePaxRecord(key: string, value: Buffer | string): Buffer {
  const k = Buffer.from(key, 'utf8');
  const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const rest = 1 + k.length + 1 + v.length + 1; // ' ' key '=' value '\n'
  let len = rest + String(rest).length;
  if (String(len).length !== String(rest).length) len = rest + String(len).length;
  const out = Buffer.allocUnsafe(len);
  let pos = out.write(`${len} `, 0, 'latin1');
  pos += k.copy(out, pos);
  out[pos++] = 0x3d;
  pos += v.copy(out, pos);
  out[pos] = 0x0a;
  return out;
}
