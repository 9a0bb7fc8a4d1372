// WWW-Authenticate challenges (RFC 7235): `Bearer realm="…",service="…",scope="…"`, or
// `Basic realm="…"`, possibly several in one header. A single linear pass over the text.

export interface Challenge {
  /** Lower-cased scheme: `bearer`, `basic`, … */
  scheme: string;
  /** Parameters by lower-cased name. */
  params: Record<string, string>;
}

const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/** Parses one or more WWW-Authenticate header values. Unparseable rest is ignored. */
export function parseChallenges(headers: string | string[] | undefined): Challenge[] {
  const out: Challenge[] = [];
  for (const h of Array.isArray(headers) ? headers : headers ? [headers] : []) parseOne(h, out);
  return out;
}

function parseOne(s: string, out: Challenge[]): void {
  let i = 0;
  const n = s.length;
  const skipWs = () => { while (i < n && (s[i] === ' ' || s[i] === '\t')) i++; };
  const token = () => { const start = i; while (i < n && TOKEN_CHAR.test(s[i]!)) i++; return s.slice(start, i); };
  let current: Challenge | null = null;
  while (i < n) {
    skipWs();
    if (s[i] === ',') { i++; continue; }
    const start = i;
    const name = token();
    if (!name) { i++; continue; } // a stray character: skip it
    skipWs();
    if (s[i] === '=' && current) {
      i++;
      skipWs();
      let value = '';
      if (s[i] === '"') {
        i++;
        while (i < n && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < n) i++;
          value += s[i];
          i++;
        }
        i++; // closing quote
      } else {
        const vs = i;
        while (i < n && s[i] !== ',' && s[i] !== ' ') i++;
        value = s.slice(vs, i);
      }
      current.params[name.toLowerCase()] = value;
    } else if (s[i] === '=' && !current) {
      // token68 or params without a scheme: nothing usable
      i = start + name.length + 1;
    } else {
      current = { scheme: name.toLowerCase(), params: {} };
      out.push(current);
    }
  }
}
