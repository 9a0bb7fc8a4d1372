// `cairn pull`, `cairn push`, `cairn login`, `cairn logout`: the registry verbs.
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { CairnError, parseByteSize } from '@cairnfs/core';
import { login, logout, type LayerStore, type PullOptions, type PushOptions } from '@cairnfs/image';
import { pullReporter, pushReporter } from './progress.js';

export interface CliContext {
  withStore<T>(fn: (store: LayerStore) => Promise<T>): Promise<T>;
  print(rows: Array<Record<string, unknown>>, columns: string[]): void;
  json(): boolean;
}

interface ConnOpts { insecure?: boolean; tlsCa?: string; username?: string; password?: string; passwordStdin?: boolean }

const collect = (v: string, prev: string[]) => [...prev, v];

async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of process.stdin) parts.push(c as Buffer);
  return Buffer.concat(parts).toString('utf8').replace(/\r?\n$/, '');
}

/** Reads a line from the terminal without echoing it. */
async function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(question);
  stdin.setRawMode(true);
  stdin.resume();
  let out = '';
  try {
    for await (const chunk of stdin) {
      for (const ch of (chunk as Buffer).toString('utf8')) {
        if (ch === '\r' || ch === '\n') return out;
        if (ch === '\u0003') throw new CairnError('ERR_INVALID_OPTION', 'login cancelled');
        if (ch === '\u007f') out = out.slice(0, -1);
        else out += ch;
      }
    }
    return out;
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
    process.stderr.write('\n');
  }
}

/** TLS, insecure and credentials options shared by the verbs. */
async function connection(o: ConnOpts, needPassword: boolean): Promise<Pick<PullOptions, 'insecure' | 'tls' | 'auth'>> {
  const out: Pick<PullOptions, 'insecure' | 'tls' | 'auth'> = {};
  if (o.insecure) out.insecure = true;
  if (o.tlsCa) out.tls = { ca: await readFile(o.tlsCa, 'utf8') };
  if (o.username || needPassword) {
    let password = o.password;
    if (o.passwordStdin) password = await readStdin();
    else if (password !== undefined) process.stderr.write('WARNING! Using --password on the command line is insecure (it shows in ps and shell history); use --password-stdin.\n');
    else if (process.stdin.isTTY) password = await promptHidden('Password: ');
    if (!o.username || password === undefined) {
      throw new CairnError('ERR_INVALID_OPTION', 'give --username and a password (--password-stdin, or typed at the prompt)');
    }
    out.auth = { username: o.username, password };
  }
  return out;
}

function mirrorsOf(specs: string[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const s of specs) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new CairnError('ERR_INVALID_OPTION', `--mirror ${s}: expected REGISTRY=URL, e.g. docker.io=https://mirror.local:5000`, { subject: s });
    (out[s.slice(0, eq)] ??= []).push(s.slice(eq + 1));
  }
  return out;
}

const withConnOptions = (c: Command) => c
  .option('--insecure', 'allow plain HTTP and unverified TLS for this registry')
  .option('--tls-ca <file>', 'trust this CA certificate (PEM) as well as the system ones')
  .option('-u, --username <name>', 'registry user (default: credentials from docker config.json / auth.json)')
  .option('-p, --password <password>', 'password (insecure: prefer --password-stdin)')
  .option('--password-stdin', 'read the password from stdin');

export function registryCommands(program: Command, ctx: CliContext): void {
  withConnOptions(program.command('pull').argument('<ref>', 'image reference, e.g. busybox:1.36, localhost:5000/app@sha256:…'))
    .description('pull an image from a registry (layers the store has are not downloaded)')
    .option('--platform <os/arch[/variant]>', 'platform to pick from a multi-platform image (default: this host)')
    .option('--mirror <registry=url>', 'try this mirror for a registry first (repeatable)', collect, [] as string[])
    .option('--sequential', 'apply layers one at a time even on overlay2')
    .option('--max-uncompressed <size>', 'refuse a layer that decompresses to more than this (default 64G)')
    .action((ref: string, o: ConnOpts & { platform?: string; mirror: string[]; sequential?: boolean; maxUncompressed?: string }) => ctx.withStore(async (store) => {
      const opts: PullOptions = {
        ...await connection(o, false),
        ...(o.platform ? { platform: o.platform } : {}),
        ...(o.mirror.length ? { mirrors: mirrorsOf(o.mirror) } : {}),
        ...(o.sequential ? { parallel: false } : {}),
        ...(o.maxUncompressed ? { maxUncompressedBytes: parseByteSize(o.maxUncompressed, '--max-uncompressed') } : {}),
      };
      const rep = pullReporter();
      const ac = new AbortController();
      const onSignal = () => ac.abort();
      process.once('SIGINT', onSignal);
      try {
        const img = await store.pull(ref, { ...opts, signal: ac.signal, onProgress: rep.onProgress });
        rep.stop();
        ctx.print([{ id: img.id, tags: img.tags.join(','), layers: img.layers.length }], ['id', 'tags', 'layers']);
      } finally {
        rep.stop();
        process.off('SIGINT', onSignal);
      }
    }));

  withConnOptions(program.command('push').argument('<image>', 'local image (name:tag, id or id prefix)').argument('<ref>', 'where to push it, e.g. localhost:5000/me/app:1'))
    .description('push an image to a registry (blobs the registry has are skipped, the manifest goes last)')
    .option('--compression <gzip|zstd>', 'layer compression (default gzip)')
    .option('--upload <stream|monolithic|chunked>', 'how blobs are sent (default stream)')
    .option('--chunk-size <size>', 'bytes per PATCH with --upload chunked (default 8M)')
    .action((image: string, ref: string, o: ConnOpts & { compression?: string; upload?: string; chunkSize?: string }) => ctx.withStore(async (store) => {
      const opts: PushOptions = {
        ...await connection(o, false),
        ...(o.compression ? { compression: o.compression as PushOptions['compression'] } : {}),
        ...(o.upload ? { upload: o.upload as PushOptions['upload'] } : {}),
        ...(o.chunkSize ? { chunkSize: parseByteSize(o.chunkSize, '--chunk-size') } : {}),
      };
      const rep = pushReporter();
      const r = await store.push(image, ref, { ...opts, onProgress: rep.onProgress });
      if (ctx.json()) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      else process.stdout.write(`${r.ref}: digest ${r.digest} (${r.uploaded} blobs uploaded, ${r.existing} already there, ${r.mounted} mounted)\n`);
    }));

  withConnOptions(program.command('login').argument('<registry>', 'registry host[:port], e.g. localhost:5000 (Docker Hub: docker.io)'))
    .description("check credentials with a registry and store them where docker does (config.json or its credential helper)")
    .action(async (registry: string, o: ConnOpts) => {
      const conn = await connection(o, true);
      const auth = conn.auth as { username: string; password: string };
      const r = await login(registry, { username: auth.username, password: auth.password, ...(conn.tls ? { tls: conn.tls } : {}), ...(conn.insecure ? { insecure: true } : {}) });
      process.stdout.write(`Login Succeeded: ${r.registry} (credentials stored in ${r.storedIn})\n`);
    });

  program.command('logout').argument('<registry>').description('forget the stored credentials of a registry')
    .action(async (registry: string) => {
      const had = await logout(registry);
      process.stdout.write(had ? `Removed login credentials for ${registry}\n` : `Not logged in to ${registry}\n`);
    });
}
