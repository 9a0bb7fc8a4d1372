import { CairnError } from './errors.js';

/**
 * The SELinux `context="…"` mount option for a mount label, as moby's
 * label.FormatMountLabel writes it; null for no label. The label is quoted because MCS
 * labels hold commas (`…:s0:c1,c2`), and refused when it could end the quoting or the
 * option string (a `"`, a control character) or is absurdly long: it comes from the
 * caller, and a stray quote would let it add mount options of its own.
 */
export function mountLabelOption(label: string | undefined): string | null {
  if (label === undefined || label === '') return null;
  // eslint-disable-next-line no-control-regex
  if (label.length > 4096 || /["\u0000-\u001f\u007f]/.test(label)) {
    throw new CairnError('ERR_INVALID_OPTION',
      `mount label ${JSON.stringify(label.slice(0, 80))} is not an SELinux label: it may not contain quotes or control characters`,
      { subject: 'mountLabel' });
  }
  return `context="${label}"`;
}
