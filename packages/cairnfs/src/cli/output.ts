// How every command prints: a table for people, JSON with typed values for scripts, bare
// ids with -q. Sizes are bytes in JSON and human units in tables (raw with --bytes).
import { Option, type Command } from 'commander';
import { globals } from './context.js';

export type Format = 'table' | 'json';

/** One table column: its header, the value it shows, and how to print that value. */
export interface Column<R> {
  header: string;
  value: (row: R) => unknown;
  /** bytes: human units unless --bytes; id: `sha256:` digests shortened to 12 hex digits unless --no-trunc. */
  kind?: 'bytes' | 'id' | 'text';
}

/** --format for commands that print a result: a table (or text) for people, JSON for scripts. */
export const formatOption = (): Option => new Option('--format <format>', 'output format (default: table, or json with --json)').choices(['table', 'json']);

/** Adds --format (and -q, --no-trunc when the listing has ids) to a listing command. */
export function listingOptions(cmd: Command, opts: { quiet?: string; ids?: boolean } = {}): Command {
  cmd.addOption(formatOption());
  if (opts.quiet) cmd.option('-q, --quiet', opts.quiet);
  if (opts.ids) cmd.option('--no-trunc', 'print full ids in the table');
  return cmd;
}

/** The output format asked for: the command's --format, else the global --json, else a table. */
export function formatOf(cmd: Command): Format {
  const o = cmd.opts<{ format?: Format }>();
  return o.format ?? (globals(cmd).json ? 'json' : 'table');
}

/** Prints a list: one JSON array (typed rows, stable keys), bare ids with -q, or a table. */
export function printList<R>(cmd: Command, rows: R[], columns: Column<R>[], json: (row: R) => object, quietId?: (row: R) => string): void {
  const o = cmd.opts<{ quiet?: boolean; trunc?: boolean }>();
  if (o.quiet && quietId) {
    for (const r of rows) process.stdout.write(`${quietId(r)}\n`);
    return;
  }
  if (formatOf(cmd) === 'json') {
    printJson(rows.map(json));
    return;
  }
  const raw = globals(cmd).bytes === true;
  const cell = (c: Column<R>, r: R): string => {
    const v = c.value(r);
    if (v === null || v === undefined) return '';
    if (c.kind === 'bytes' && typeof v === 'number') return raw ? String(v) : humanBytes(v);
    if (c.kind === 'id' && typeof v === 'string' && o.trunc !== false) return shortId(v);
    return Array.isArray(v) ? v.join(',') : String(v);
  };
  printTable(columns.map((c) => c.header), rows.map((r) => columns.map((c) => cell(c, r))));
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Left-aligned columns two spaces apart, headers in capitals (docker's look). */
export function printTable(headers: string[], rows: string[][]): void {
  const cells = [headers.map((h) => h.toUpperCase()), ...rows];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  for (const r of cells) process.stdout.write(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd() + '\n');
}

/** `sha256:0123456789abcdef…` → `0123456789ab`, as docker shows image ids; other strings unchanged. */
export function shortId(id: string): string {
  const hex = id.startsWith('sha256:') ? id.slice(7) : id;
  return /^[0-9a-f]{64}$/.test(hex) ? hex.slice(0, 12) : id;
}

/** Sizes as docker prints them: decimal units, three significant digits ("1.23MB", "512B"). */
export function humanBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let value = bytes;
  let i = 0;
  while (Math.abs(value) >= 1000 && i < units.length - 1) {
    value /= 1000;
    i++;
  }
  return `${i === 0 ? value : Number(value.toPrecision(3))}${units[i]}`;
}

/** Whole seconds as `1h02m03s` / `2m05s` / `7s`. */
export function humanDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n: number) => String(n).padStart(2, '0');
  if (h) return `${h}h${pad(m)}m${pad(s % 60)}s`;
  if (m) return `${m}m${pad(s % 60)}s`;
  return `${s}s`;
}
