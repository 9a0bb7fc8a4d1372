import { CairnError } from '@cairn/core';

const SIZE = /^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$/i;
const SHIFT: Record<string, bigint> = { k: 10n, m: 20n, g: 30n, t: 40n, p: 50n };

/**
 * Parses a size as moby's units.RAMInBytes does (`storageOpt.size`): a number with an
 * optional binary unit, `64M` = `64MiB` = `64mb` = 67108864, `1.5G`, `4096`. Returns
 * whole bytes (fractions are rounded down). ERR_INVALID_OPTION for anything else.
 */
export function parseSize(value: string, what = 'size'): number {
  const match = SIZE.exec(value.trim());
  if (!match) {
    throw new CairnError('ERR_INVALID_OPTION',
      `invalid ${what} ${JSON.stringify(value)}: use a number of bytes with an optional unit, e.g. 64M, 10G, 512k`,
      { subject: what });
  }
  const [whole, fraction = ''] = match[1]!.split('.');
  const shift = SHIFT[(match[2] ?? '').toLowerCase()] ?? 0n;
  const scale = 10n ** BigInt(fraction.length);
  const bytes = (BigInt(whole! + fraction) << shift) / scale;
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CairnError('ERR_INVALID_OPTION', `${what} ${JSON.stringify(value)} is too large`, { subject: what });
  }
  return Number(bytes);
}
