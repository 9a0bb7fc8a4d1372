// Raw tar blocks for the addon's tests, written by hand so a test can say exactly which
// header, size field or map the reader sees (including the hostile ones a writer would
// never produce). ustar headers with the checksum filled in.

export const BLOCK = 512;

export interface HeaderFields {
  size?: number;
  /** The typeflag character ('0' file, '5' dir, 'x' PAX, 'g' global PAX, 'S' old GNU sparse, …). */
  type?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  /** GNU magic ("ustar  ") instead of POSIX ("ustar\0" "00"). */
  gnu?: boolean;
}

/** Octal, NUL-terminated, or GNU base-256 when it does not fit `width - 1` digits. */
export function writeNumber(b: Buffer, off: number, width: number, value: number): void {
  const octal = value.toString(8);
  if (octal.length < width) {
    b.write(octal.padStart(width - 1, '0') + '\0', off, 'latin1');
    return;
  }
  let v = BigInt(value);
  for (let i = width - 1; i > 0; i--) {
    b[off + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  b[off] = 0x80;
}

export function seal(b: Buffer): Buffer {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return b;
}

export function header(name: string, f: HeaderFields = {}): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(name.slice(0, 100), 0);
  writeNumber(b, 100, 8, f.mode ?? 0o644);
  writeNumber(b, 108, 8, f.uid ?? 0);
  writeNumber(b, 116, 8, f.gid ?? 0);
  writeNumber(b, 124, 12, f.size ?? 0);
  writeNumber(b, 136, 12, 0o14000000000);
  b.write(f.type ?? '0', 156, 'latin1');
  if (f.linkname !== undefined) b.write(f.linkname, 157);
  b.write(f.gnu ? 'ustar  \0' : 'ustar\0' + '00', 257, 'latin1');
  return seal(b);
}

export function padding(n: number): Buffer {
  return Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK);
}

/** An entry with content (padded to the block). */
export function entry(name: string, body: Buffer | string = '', f: HeaderFields = {}): Buffer {
  const data = typeof body === 'string' ? Buffer.from(body) : body;
  return Buffer.concat([header(name, { ...f, size: data.length }), data, padding(data.length)]);
}

/** One PAX record, "<len> key=value\n" with its self-including length. */
export function paxRecord(key: string, value: string | Buffer): Buffer {
  const rest = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value), Buffer.from('\n')]);
  let len = rest.length + String(rest.length).length;
  if (String(len).length !== String(rest.length).length) len = rest.length + String(len).length;
  return Buffer.concat([Buffer.from(String(len)), rest]);
}

/** An 'x' (or 'g') header carrying `body`. */
export function pax(body: Buffer, type: 'x' | 'g' = 'x'): Buffer {
  return entry('PaxHeaders/x', body, { type });
}

export function trailer(): Buffer {
  return Buffer.alloc(2 * BLOCK);
}
