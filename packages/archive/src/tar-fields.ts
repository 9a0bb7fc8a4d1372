// Low-level tar header fields: offsets, numeric encodings (octal and GNU base-256),
// checksums. Pure functions over 512-byte blocks; the reader and writer share them.

export const BLOCK = 512;

/** Byte offsets of the ustar header fields (POSIX.1-1988, plus GNU's extensions). */
export const F = {
  name: [0, 100],
  mode: [100, 8],
  uid: [108, 8],
  gid: [116, 8],
  size: [124, 12],
  mtime: [136, 12],
  chksum: [148, 8],
  typeflag: [156, 1],
  linkname: [157, 100],
  magic: [257, 6],
  version: [263, 2],
  uname: [265, 32],
  gname: [297, 32],
  devmajor: [329, 8],
  devminor: [337, 8],
  prefix: [345, 155],
  // GNU header only (these overlap ustar's prefix):
  gnuAtime: [345, 12],
  gnuSparse: [386, 96],
  gnuIsExtended: [482, 1],
  gnuRealSize: [483, 12],
} as const satisfies Record<string, readonly [number, number]>;

const OCTAL_MAX: number[] = Array.from({ length: 13 }, (_, w) => (w === 0 ? 0 : 8 ** (w - 1) - 1));

/** The largest value an octal field of `width` bytes holds (one byte goes to the terminator). */
export function octalMax(width: number): number {
  return OCTAL_MAX[width] ?? 8 ** (width - 1) - 1;
}

/**
 * Reads a numeric field: octal ASCII (space/NUL padded) or GNU base-256 when the first
 * byte has its high bit set. Returns null when the field is malformed, so the caller can
 * name the entry in its error.
 */
export function readNumber(block: Uint8Array, off: number, width: number): number | null {
  const first = block[off]!;
  if (first & 0x80) {
    // Base-256, big-endian. 0x80 in the first byte flags a positive number (its other
    // bits are value bits); a leading 0xff makes the whole field two's complement.
    let value = 0n;
    for (let i = 0; i < width; i++) {
      const byte = i === 0 && first !== 0xff ? first & 0x7f : block[off + i]!;
      value = (value << 8n) | BigInt(byte);
    }
    if (first === 0xff) value -= 1n << BigInt(8 * width);
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) return null;
    return Number(value);
  }
  let i = off;
  const end = off + width;
  while (i < end && (block[i] === 0x20 || block[i] === 0)) {
    if (block[i] === 0) return 0; // an empty (all-NUL) field reads as 0
    i++;
  }
  let value = 0;
  for (; i < end; i++) {
    const c = block[i]!;
    if (c >= 0x30 && c <= 0x37) {
      value = value * 8 + (c - 0x30);
    } else if (c === 0x20 || c === 0) {
      break;
    } else {
      return null;
    }
  }
  for (; i < end; i++) {
    // Only padding may follow the digits.
    if (block[i] !== 0x20 && block[i] !== 0) return null;
  }
  return value;
}

/** Writes `value` as zero-padded octal with a NUL terminator; base-256 when it does not fit. */
export function writeNumber(block: Uint8Array, off: number, width: number, value: number): void {
  if (value >= 0 && value <= octalMax(width)) {
    const digits = value.toString(8);
    const lead = width - 1 - digits.length;
    for (let i = 0; i < lead; i++) block[off + i] = 0x30;
    for (let i = 0; i < digits.length; i++) block[off + lead + i] = digits.charCodeAt(i);
    block[off + width - 1] = 0;
    return;
  }
  let v = BigInt(value);
  for (let i = width - 1; i >= 0; i--) {
    block[off + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  block[off] = value < 0 ? 0xff : 0x80;
}

/** Reads a NUL-terminated text field as UTF-8. */
export function readString(block: Uint8Array, off: number, width: number): string {
  if (block[off] === 0) return '';
  let end = off;
  const max = off + width;
  while (end < max && block[end] !== 0) end++;
  // A Buffer decodes its own range without a view object per field (hot: several per entry).
  if (Buffer.isBuffer(block)) return block.toString('utf8', off, end);
  return Buffer.from(block.buffer, block.byteOffset + off, end - off).toString('utf8');
}

/** True when every byte of the block is zero (an end-of-archive marker). */
export function isZeroBlock(block: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
}

/** The standard header checksum: the unsigned byte sum, the checksum field read as spaces. */
export function checksum(block: Uint8Array): number {
  // One branch-free pass with four accumulators, then the checksum field swapped for spaces.
  let a = 0, b = 0, c = 0, d = 0;
  for (let i = 0; i < BLOCK; i += 4) {
    a += block[i]!;
    b += block[i + 1]!;
    c += block[i + 2]!;
    d += block[i + 3]!;
  }
  let field = 0;
  for (let i = 148; i < 156; i++) field += block[i]!;
  return a + b + c + d - field + 8 * 0x20;
}

/** The signed-byte sum some historic tars (old Sun tar) wrote; accepted as well. */
export function signedChecksum(block: Uint8Array): number {
  let sum = 8 * 0x20;
  for (let i = 0; i < BLOCK; i++) {
    if (i >= 148 && i < 156) continue;
    const b = block[i]!;
    sum += b > 127 ? b - 256 : b;
  }
  return sum;
}

/** Fills in the checksum field of a header being written (six octal digits, NUL, space). */
export function sealChecksum(block: Uint8Array): void {
  const sum = checksum(block);
  const digits = sum.toString(8).padStart(6, '0');
  for (let i = 0; i < 6; i++) block[148 + i] = digits.charCodeAt(i);
  block[154] = 0;
  block[155] = 0x20;
}

/**
 * Parses a PAX time value (`"1700000000.123456789"`, `"-1.5"`) into nanoseconds. By hand,
 * not with a regex: GNU tar's pax format puts two times before every entry.
 */
export function parsePaxTime(text: string): bigint | null {
  const len = text.length;
  let i = 0;
  const negative = text.charCodeAt(0) === 0x2d;
  if (negative) i = 1;
  const secStart = i;
  let sec = 0;
  for (; i < len; i++) {
    const d = text.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) break;
    sec = sec * 10 + d;
  }
  const secDigits = i - secStart;
  if (secDigits === 0) return null;
  let frac = 0;
  let fracDigits = 0;
  if (i < len && text.charCodeAt(i) === 0x2e) {
    for (i++; i < len; i++) {
      const d = text.charCodeAt(i) - 0x30;
      if (d < 0 || d > 9) return null;
      if (fracDigits < 9) {
        frac = frac * 10 + d;
        fracDigits++;
      }
    }
  }
  if (i !== len) return null;
  for (; fracDigits < 9; fracDigits++) frac *= 10;
  // Seconds beyond 2^53 (15+ digits) are still exact through BigInt of the text.
  const whole = secDigits > 15 ? BigInt(text.slice(secStart, secStart + secDigits)) : BigInt(sec);
  const ns = whole * 1_000_000_000n + BigInt(frac);
  return negative ? -ns : ns;
}

/** Formats nanoseconds as a PAX time with no trailing zeros in the fraction. */
export function formatPaxTime(ns: bigint): string {
  const negative = ns < 0n;
  const abs = negative ? -ns : ns;
  const sec = abs / 1_000_000_000n;
  const frac = abs % 1_000_000_000n;
  let text = sec.toString();
  if (frac !== 0n) text += '.' + frac.toString().padStart(9, '0').replace(/0+$/, '');
  return negative ? '-' + text : text;
}

/** Decimal digits only (no sign, space, exponent or hex, unlike Number()), up to 2^53 - 1; NaN otherwise. */
export function decimal(text: string): number {
  if (text.length === 0) return NaN;
  let value = 0;
  for (let i = 0; i < text.length; i++) {
    const d = text.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return NaN;
    value = value * 10 + d;
  }
  return Number.isSafeInteger(value) ? value : NaN;
}
