import { CairnError } from './errors.js';

// moby's units.RAMInBytes grammar: digits, an optional fraction, an optional space, then
// an optional binary unit letter with optional "i" and "b" ("64M" = "64MiB" = "64mb").
const SIZE_PATTERN = /^(\d+)(?:\.(\d+))? ?([kmgtp])?i?b?$/i;
const UNIT_POWER: Record<string, number> = { k: 1, m: 2, g: 3, t: 4, p: 5 };

/**
 * Parses a byte size the way moby parses `size` storage options and `*.min_space`
 * driver options (units.RAMInBytes): `4096`, `512k`, `64M`, `1.5G`, `10GiB`. Units are
 * binary (k = 1024). Fractions of a byte are dropped. ERR_INVALID_OPTION names `what`
 * when the text is not a size or does not fit in a safe integer.
 */
export function parseByteSize(text: string, what = 'size'): number {
  const match = SIZE_PATTERN.exec(text.trim());
  if (!match) {
    throw new CairnError('ERR_INVALID_OPTION',
      `invalid ${what} ${JSON.stringify(text)}: expected a byte count with an optional unit such as 512k, 64M or 10G`,
      { subject: what });
  }
  const [, whole, fraction = '', unit] = match;
  const multiplier = 1024n ** BigInt(unit ? UNIT_POWER[unit.toLowerCase()]! : 0);
  const bytes = (BigInt(whole! + fraction) * multiplier) / 10n ** BigInt(fraction.length);
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CairnError('ERR_INVALID_OPTION', `${what} ${JSON.stringify(text)} is too large`, { subject: what });
  }
  return Number(bytes);
}

/** Bytes as moby's units.BytesSize prints them: "64MiB", "1.5GiB", "512B". */
export function formatByteSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return `${Number(value.toFixed(4)).toString()}${units[i]}`;
}
