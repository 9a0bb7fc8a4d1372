/**
 * Power-loss ordering, proven from the syscalls (issue 7): a child process
 * (reliability-powerloss-child.ts) makes layers with a driver (overlay2, vfs, btrfs on a
 * loopback), then imports an image and makes a container through the image LayerStore,
 * under
 * `strace -f -tt -y -e trace=openat,open,write,…,fsync,fdatasync,syncfs,rename*,symlink*,mkdir*,link*,*setxattr`.
 * The child writes `MARK {step}` to stdout the moment each API call resolves, so the
 * marker is a write(2) in the same trace. This file parses the trace and checks the order.
 *
 * What must be ordered against what. After power loss the disk holds some prefix of what
 * was made durable plus an arbitrary subset of what was not: a rename can reach the disk
 * before the data or the directory entries it relies on. The failure that matters is a
 * layer (or layer-store entry) that *looks* complete but is not. A layer looks complete
 * when its final name exists (the publishing rename: `.staging/<id>-x` → `<id>`,
 * layerdb `tmp/layer-x` → `sha256/<chain>`, `tmp/mount-x` → `mounts/<name>`), so:
 *  1. every file that makes it complete (overlay2: `link`, `lower`; vfs: `meta/<id>.json`;
 *     store: `diff`, `size`, `cache-id`, `parent`, `tar-split.gz`, …, `mount-id`, `image`)
 *     is written and then fsynced, and the directory holding its entry is fsynced after
 *     the entry was made, BEFORE the publishing rename. Entries of things outside the
 *     layer dir it depends on (overlay2's `l/<short>` symlink; vfs's metadata file; the
 *     store's intent file, which lets open() remove a driver layer nobody claims) likewise;
 *  2. the publishing rename itself is made durable (its destination directory fsynced)
 *     BEFORE the API call returns: callers build on a returned layer (the store records
 *     a chain id pointing at a driver layer; a driver layer's child names its parent), so
 *     a returned layer that vanishes at power loss is a dangling reference;
 *  3. the store records a layer only after the driver layer (its publish and its applied
 *     diff swap) is durable: its layerdb rename comes after those directory fsyncs;
 *  4. state changed in place by a call (overlay2's applyDiff swaps `diff/` and sets the
 *     sealed xattr on the layer dir; vfs rewrites its metadata) is durable before the
 *     call returns;
 *  5. directories the run itself made on the way to a final name (the store's
 *     `layerdb/sha256`, `layerdb/mounts`, `imagedb/content/sha256`) have their own entry
 *     fsynced too, else the first import's records can vanish with their directory.
 * Content of applied diffs (the files a tar unpacks) is NOT checked: as moby, cairn does
 * not fsync each unpacked file, so a power loss shortly after an import can leave a
 * committed layer with short files. Closing that needs a syncfs(2) per apply (not in
 * @cairnfs/sys yet).
 * fsync of a file by any fd counts (the data is the inode's); a syncfs counts for all.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeBackend, loopFsMissing, makeLoopFs } from '@cairnfs/testkit';
import { overlayMissing } from './reliability-helpers.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '..', '..', '..');
const CHILD = join(here, 'reliability-powerloss-child.ts');
const TRACED = 'openat,open,write,writev,pwrite64,pwritev,pwritev2,fsync,fdatasync,syncfs,rename,renameat,renameat2,'
  + 'symlink,symlinkat,mkdir,mkdirat,link,linkat,setxattr,lsetxattr,fsetxattr,close';

function straceMissing(): string | null {
  try {
    execFileSync('strace', ['-V'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'strace is not installed (scripts/install-deps.sh installs it)';
  }
}

// ---- trace parsing -------------------------------------------------------------------

type Event =
  | { kind: 'create'; path: string; start: number; end: number }
  | { kind: 'rename'; from: string; path: string; start: number; end: number }
  | { kind: 'write' | 'sync' | 'xattr'; path: string; start: number; end: number }
  | { kind: 'mark'; data: Record<string, unknown>; start: number; end: number };

/** Splits a syscall's argument text at top-level commas (quotes, <fd paths>, {}, [] kept whole). */
function splitArgs(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quoted = false;
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      cur += c;
      if (c === '\\') cur += text[++i] ?? '';
      else if (c === '"') quoted = false;
      continue;
    }
    if (c === '"') quoted = true;
    else if (c === '<' || c === '{' || c === '[' || c === '(') depth++;
    else if (c === '>' || c === '}' || c === ']' || c === ')') depth--;
    if (c === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
      continue;
    }
    cur += c;
  }
  if (cur.trim() !== '') out.push(cur.trim());
  return out;
}

/** The C string literal strace printed, decoded (JSON's escapes are a superset of what our paths and markers use). */
function str(arg: string | undefined): string {
  const m = /^"(.*)"(\.\.\.)?$/s.exec(arg ?? '');
  if (!m) throw new Error(`not a string argument: ${arg}`);
  return JSON.parse(`"${m[1]!.replace(/\\x([0-9a-f]{2})/g, '\\u00$1')}"`) as string;
}

/** The path strace -y printed for an fd argument (`3</a/b>`, `AT_FDCWD</cwd>`). */
function fdPath(arg: string | undefined): string | undefined {
  return /^(?:-?\d+|AT_FDCWD)<(.*)>$/s.exec(arg ?? '')?.[1];
}

function at(dirArg: string | undefined, pathArg: string | undefined): string {
  const p = str(pathArg);
  if (p.startsWith('/')) return p;
  const dir = fdPath(dirArg);
  if (dir === undefined) throw new Error(`cannot resolve ${p} against ${dirArg}`);
  return join(dir, p);
}

function parseTrace(text: string): Event[] {
  const pending = new Map<string, { head: string; start: number }>();
  const events: Event[] = [];
  const lines = text.split('\n');
  for (const [i, line] of lines.entries()) {
    const m = /^(\d+)\s+\S+\s+(.*)$/.exec(line);
    if (!m) continue;
    const [, pid, rest] = m as unknown as [string, string, string];
    let call: string;
    let start = i;
    if (rest.endsWith(' <unfinished ...>')) {
      pending.set(pid, { head: rest.slice(0, -' <unfinished ...>'.length), start: i });
      continue;
    }
    const resumed = /^<\.\.\. (\w+) resumed>(.*)$/s.exec(rest);
    if (resumed) {
      const p = pending.get(pid);
      pending.delete(pid);
      if (!p) continue;
      call = p.head + resumed[2]!;
      start = p.start;
    } else {
      call = rest;
    }
    const nameEnd = call.indexOf('(');
    const retAt = call.lastIndexOf(') = ');
    if (nameEnd < 0 || retAt < 0) continue; // exits, signals
    const name = call.slice(0, nameEnd);
    const retText = call.slice(retAt + 4);
    const ret = Number(/^-?\d+/.exec(retText)?.[0] ?? -1);
    if (ret < 0) continue;
    const args = splitArgs(call.slice(nameEnd + 1, retAt));
    const span = { start, end: i };
    switch (name) {
      case 'open': case 'openat': {
        const flags = args[name === 'open' ? 1 : 2] ?? '';
        const path = /^\d+<(.*)>/s.exec(retText)?.[1];
        if (flags.includes('O_CREAT') && path) events.push({ kind: 'create', path, ...span });
        break;
      }
      case 'mkdir': events.push({ kind: 'create', path: at(undefined, args[0]), ...span }); break;
      case 'mkdirat': events.push({ kind: 'create', path: at(args[0], args[1]), ...span }); break;
      case 'symlink': events.push({ kind: 'create', path: at(undefined, args[1]), ...span }); break;
      case 'symlinkat': events.push({ kind: 'create', path: at(args[1], args[2]), ...span }); break;
      case 'link': events.push({ kind: 'create', path: at(undefined, args[1]), ...span }); break;
      case 'linkat': events.push({ kind: 'create', path: at(args[2], args[3]), ...span }); break;
      case 'rename': events.push({ kind: 'rename', from: at(undefined, args[0]), path: at(undefined, args[1]), ...span }); break;
      case 'renameat': case 'renameat2':
        events.push({ kind: 'rename', from: at(args[0], args[1]), path: at(args[2], args[3]), ...span });
        break;
      case 'write': case 'writev': case 'pwrite64': case 'pwritev': case 'pwritev2': {
        if (args[0]?.startsWith('1<') && name === 'write') {
          const data = str(args[1]);
          if (data.startsWith('MARK ')) events.push({ kind: 'mark', data: JSON.parse(data.slice(5)) as Record<string, unknown>, ...span });
          break;
        }
        const path = fdPath(args[0]);
        if (path) events.push({ kind: 'write', path, ...span });
        break;
      }
      case 'fsync': case 'fdatasync': {
        const path = fdPath(args[0]);
        if (path) events.push({ kind: 'sync', path, ...span });
        break;
      }
      case 'syncfs': events.push({ kind: 'sync', path: '*', ...span }); break;
      case 'setxattr': case 'lsetxattr': events.push({ kind: 'xattr', path: at(undefined, args[0]), ...span }); break;
      case 'fsetxattr': {
        const path = fdPath(args[0]);
        if (path) events.push({ kind: 'xattr', path, ...span });
        break;
      }
    }
  }
  return events.sort((a, b) => a.start - b.start);
}

// ---- ordering checks -----------------------------------------------------------------

/**
 * Ordering questions over one trace. Each check appends a sentence to `problems` when it
 * fails; "before" means the durable step *ended* before the later step *started*.
 */
class Ordering {
  readonly problems: string[] = [];

  constructor(private readonly events: Event[], private readonly root: string) {}

  private rel(p: string): string {
    return p.startsWith(this.root) ? p.slice(this.root.length + 1) : p;
  }

  mark(step: string, pred: (d: Record<string, unknown>) => boolean = () => true): Extract<Event, { kind: 'mark' }> {
    const m = this.events.find((e): e is Extract<Event, { kind: 'mark' }> => e.kind === 'mark' && e.data.step === step && pred(e.data));
    if (!m) throw new Error(`the child never marked ${step}; did it fail? (see its stderr above)`);
    return m;
  }

  /** The last event making `path` (create or rename onto it) that ended before `by`. */
  private maker(path: string, by: number): Event | undefined {
    return this.events.filter((e) => (e.kind === 'create' || e.kind === 'rename') && e.path === path && e.end < by).at(-1);
  }

  private synced(path: string, after: number, by: number): boolean {
    return this.events.some((e) => e.kind === 'sync' && (e.path === path || e.path === '*') && e.start > after && e.end < by);
  }

  /** The last rename onto `path` before `by`: the step that published it. */
  publish(path: string, by: number, what: string): Extract<Event, { kind: 'rename' }> | undefined {
    const r = this.events.filter((e): e is Extract<Event, { kind: 'rename' }> => e.kind === 'rename' && e.path === path && e.end < by).at(-1);
    if (!r) this.problems.push(`${what}: no rename published ${this.rel(path)}`);
    return r;
  }

  /** The directory entry of `path` is on disk by `by`: its directory was fsynced after the entry was made. */
  entry(path: string, by: number, what: string, ancestorsBelow?: string): void {
    const made = this.maker(path, by);
    if (!made) {
      this.problems.push(`${what}: ${this.rel(path)} was never made before it was needed`);
      return;
    }
    if (!this.synced(dirname(path), made.end, by)) {
      this.problems.push(`${what}: ${this.rel(dirname(path))}/ not fsynced after ${this.rel(path)} was ${made.kind === 'rename' ? 'renamed into it' : 'made'}`);
    }
    // Directories made during the run on the way there need their own entries (rule 5).
    const parent = dirname(path);
    if (ancestorsBelow !== undefined && parent.startsWith(`${ancestorsBelow}/`) && this.maker(parent, by)) {
      this.entry(parent, by, what, ancestorsBelow);
    }
  }

  /** The file's bytes are on disk by `by`: written, then fsynced (following the rename that named it, if any). */
  content(path: string, by: number, what: string): void {
    const made = this.maker(path, by);
    if (made?.kind === 'rename') {
      this.content(made.from, made.start, what);
      return;
    }
    const writes = this.events.filter((e) => e.kind === 'write' && e.path === path && e.end < by);
    const last = writes.at(-1);
    if (!last) {
      this.problems.push(`${what}: ${this.rel(path)} was never written`);
      return;
    }
    if (!this.synced(path, last.end, by)) this.problems.push(`${what}: ${this.rel(path)} not fsynced after its last write`);
  }

  /** A file that makes something complete: its bytes and its entry on disk by `by`. */
  file(path: string, by: number, what: string): void {
    this.content(path, by, what);
    this.entry(path, by, what);
  }

  /** An xattr set on `path` is on disk by `by` (fsync of the inode after the last set). */
  xattr(path: string, by: number, what: string): void {
    const last = this.events.filter((e) => e.kind === 'xattr' && e.path === path && e.end < by).at(-1);
    if (!last) {
      this.problems.push(`${what}: no xattr was set on ${this.rel(path)}`);
      return;
    }
    if (!this.synced(path, last.end, by)) this.problems.push(`${what}: ${this.rel(path)} not fsynced after its xattr was set`);
  }
}

// ---- running the child ---------------------------------------------------------------

interface Traced {
  root: string;
  events: Event[];
}

/** Runs the child for `driver` under strace in `dir`/run (its trace kept in `dir`) and parses the trace. */
async function traceChild(driver: string, dir: string): Promise<Traced> {
  const out = join(dir, 'trace.txt');
  const args = ['-f', '-tt', '-y', '-s', '512', '-o', out, '-e', `trace=${TRACED}`,
    process.execPath, '--import', join(repoRoot, 'scripts', 'ts-register.mjs'), CHILD, driver, join(dir, 'run')];
  const child = spawn('strace', args, { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
  const code = await new Promise<number | null>((res) => child.on('close', res));
  if (code !== 0) throw new Error(`traced child for ${driver} exited ${code}: ${stderr}`);
  return { root: join(dir, 'run'), events: parseTrace(await readFile(out, 'utf8')) };
}

interface ImportMark {
  image: string;
  layers: Array<{ chainId: string; cacheId: string }>;
}

/** Checks rules 1–5 for the image store on top of `driverLayer` (rule 3: what "durable driver layer" means per driver). */
function checkStore(o: Ordering, root: string, driverCreated: (cacheId: string, by: number, what: string) => void): void {
  const storeDir = join(root, 'image', String(o.mark('storeOpen').data.dir).split('/').at(-1)!);
  const imp = o.mark('importImage');
  const { image, layers } = imp.data as unknown as ImportMark;
  for (const [i, l] of layers.entries()) {
    const what = `import layer ${i}`;
    const final = join(storeDir, 'layerdb', 'sha256', l.chainId.slice(7));
    const r = o.publish(final, imp.start, what);
    if (!r) continue;
    const files = ['diff', 'size', 'tar-size', 'cache-id', 'exact', 'tar-split.gz', ...(i > 0 ? ['parent'] : [])];
    for (const f of files) o.file(join(r.from, f), r.start, what);
    driverCreated(l.cacheId, r.start, what);
    o.entry(final, imp.start, what, storeDir);
  }
  const config = join(storeDir, 'imagedb', 'content', 'sha256', image.slice(7));
  o.content(config, imp.start, 'image config');
  o.entry(config, imp.start, 'image config', storeDir);
  o.file(join(storeDir, 'repositories.json'), imp.start, 'repositories.json');

  const cont = o.mark('createContainer');
  const final = join(storeDir, 'layerdb', 'mounts', 'box');
  const r = o.publish(final, cont.start, 'container');
  if (r) {
    for (const f of ['mount-id', 'image', 'parent']) o.file(join(r.from, f), r.start, 'container');
    driverCreated(String(cont.data.mountId), r.start, 'container');
  }
  o.entry(final, cont.start, 'container', storeDir);
}

function checkIntent(o: Ordering, storeDir: string, cacheId: string, driverPublish: number, what: string): void {
  const intent = join(storeDir, 'layerdb', 'tmp', `intent-${cacheId}`);
  o.content(intent, driverPublish, `${what} intent`);
  o.entry(intent, driverPublish, `${what} intent`);
}

const strace = straceMissing();

describeBackend('overlay2', strace ?? overlayMissing(), () => {
  let t: Traced;
  let o: Ordering;
  let dir: string | undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-powerloss-overlay2-'));
    t = await traceChild('overlay2', dir);
    o = new Ordering(t.events, t.root);
  });
  beforeEach(() => { if (o) o.problems.length = 0; });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const home = (): string => join(t.root, 'overlay2');
  /** Rule 1 and 2 for one overlay2 layer made by create/createReadWrite; returns the publishing rename's start. */
  const created = (id: string, withParent: boolean, by: number, what: string): number | undefined => {
    const final = join(home(), id);
    const r = o.publish(final, by, what);
    if (!r) return undefined;
    o.file(join(r.from, 'link'), r.start, what);
    if (withParent) o.file(join(r.from, 'lower'), r.start, what);
    o.entry(join(r.from, 'diff'), r.start, what);
    if (withParent) o.entry(join(r.from, 'work'), r.start, what);
    return r.start;
  };
  const linked = async (id: string, by: number, what: string): Promise<void> => {
    const short = (await readFile(join(home(), id, 'link'), 'utf8')).trim();
    o.entry(join(home(), 'l', short), by, what);
  };

  test('create/createReadWrite: link, lower, diff/, work/ and the l/ symlink are durable before the staged dir is renamed into place, and the rename before the call returns', async () => {
    for (const [id, parent, step] of [['base', false, 'create'], ['child', true, 'create'], ['rw', true, 'createReadWrite']] as const) {
      const m = o.mark(step, (d) => d.id === id);
      const published = created(id, parent, m.start, `${step} ${id}`);
      if (published !== undefined) await linked(id, published, `${step} ${id}`);
      o.entry(join(home(), id), m.start, `${step} ${id}`);
    }
    expect(o.problems).toEqual([]);
  });

  test('applyDiff: the swapped-in diff/ and the sealed xattr on the layer dir are durable before the call returns', () => {
    for (const id of ['base', 'child']) {
      const m = o.mark('applyDiff', (d) => d.id === id);
      o.entry(join(home(), id, 'diff'), m.start, `applyDiff ${id}`);
      o.xattr(join(home(), id), m.start, `applyDiff ${id} seal`);
    }
    expect(o.problems).toEqual([]);
  });

  test('image store on overlay2: layerdb, image config, repositories and container records durable in order, each after the driver layer it names', async () => {
    const storeDir = join(t.root, 'image', 'overlay2');
    const { layers } = o.mark('importImage').data as unknown as ImportMark;
    const shorts = new Map<string, string>();
    for (const l of layers) shorts.set(l.cacheId, (await readFile(join(home(), l.cacheId, 'link'), 'utf8')).trim());
    const mountId = String(o.mark('createContainer').data.mountId);
    shorts.set(mountId, (await readFile(join(home(), mountId, 'link'), 'utf8')).trim());
    checkStore(o, t.root, (cacheId, by, what) => {
      const published = created(cacheId, cacheId !== layers[0]?.cacheId, by, `${what} (driver)`);
      if (published === undefined) return;
      o.entry(join(home(), 'l', shorts.get(cacheId)!), published, `${what} (driver)`);
      o.entry(join(home(), cacheId), by, `${what} (driver)`);
      if (cacheId !== mountId) o.entry(join(home(), cacheId, 'diff'), by, `${what} (driver diff)`);
      checkIntent(o, storeDir, cacheId, published, what);
    });
    expect(o.problems).toEqual([]);
  });
});

/**
 * vfs and btrfs: a layer is a directory (a subvolume on btrfs) published by one rename
 * from a staging name, with a metadata JSON beside it that must be durable first.
 */
function describeMetaDriver(driver: 'vfs' | 'btrfs', missing: string | null, layersDir: string, makeRoot: () => Promise<{ root: string; dispose(): Promise<void> }>): void {
  describeBackend(driver, missing, () => {
    let t: Traced;
    let o: Ordering;
    let disposeRoot: (() => Promise<void>) | undefined;
    beforeAll(async () => {
      const r = await makeRoot();
      disposeRoot = () => r.dispose();
      t = await traceChild(driver, r.root);
      o = new Ordering(t.events, t.root);
    });
    beforeEach(() => { if (o) o.problems.length = 0; });
    afterAll(async () => {
      await disposeRoot?.();
    });

    const home = (): string => join(t.root, driver);
    const layer = (id: string): string => join(home(), layersDir, id);
    const meta = (id: string): string => join(home(), 'meta', `${id}.json`);
    /** The first rename onto the layer's path is create's publish. */
    const firstPublish = (id: string): Extract<Event, { kind: 'rename' }> | undefined =>
      t.events.find((e): e is Extract<Event, { kind: 'rename' }> => e.kind === 'rename' && e.path === layer(id));

    test(`create/createReadWrite: the metadata JSON is durable before ${layersDir}/<id> is renamed into place, and the rename before the call returns`, () => {
      for (const [id, step] of [['base', 'create'], ['child', 'create'], ['rw', 'createReadWrite']] as const) {
        const m = o.mark(step, (d) => d.id === id);
        const r = firstPublish(id);
        if (!r || r.end > m.start) {
          o.problems.push(`${step} ${id}: ${layersDir}/${id} was not published before the call returned`);
          continue;
        }
        o.file(meta(id), r.start, `${step} ${id}`);
        o.entry(layer(id), m.start, `${step} ${id}`);
      }
      expect(o.problems).toEqual([]);
    });

    test('applyDiff: the layer\'s path and its rewritten (sealed) metadata are durable before the call returns', () => {
      for (const id of ['base', 'child']) {
        const m = o.mark('applyDiff', (d) => d.id === id);
        o.entry(layer(id), m.start, `applyDiff ${id}`);
        o.file(meta(id), m.start, `applyDiff ${id}`);
      }
      expect(o.problems).toEqual([]);
    });

    test(`image store on ${driver}: layerdb, image config, repositories and container records durable in order, each after the driver layer it names`, () => {
      const storeDir = join(t.root, 'image', driver);
      checkStore(o, t.root, (cacheId, by, what) => {
        const r = firstPublish(cacheId);
        if (!r || r.end > by) {
          o.problems.push(`${what}: driver layer ${cacheId} not published before the store recorded it`);
          return;
        }
        o.file(meta(cacheId), r.start, `${what} (driver meta)`);
        o.entry(layer(cacheId), by, `${what} (driver)`);
        o.file(meta(cacheId), by, `${what} (driver meta, final)`);
        checkIntent(o, storeDir, cacheId, r.start, what);
      });
      expect(o.problems).toEqual([]);
    });
  });
}

async function tempRoot(driver: string): Promise<{ root: string; dispose(): Promise<void> }> {
  const root = await mkdtemp(join(tmpdir(), `cairn-powerloss-${driver}-`));
  return { root, dispose: () => rm(root, { recursive: true, force: true }) };
}

describeMetaDriver('vfs', strace, 'dir', () => tempRoot('vfs'));

describeMetaDriver('btrfs', strace ?? loopFsMissing('btrfs'), 'subvolumes', async () => {
  const fs = await makeLoopFs('btrfs', { sizeMiB: 256 });
  return { root: fs.dir, dispose: () => fs.dispose() };
});
