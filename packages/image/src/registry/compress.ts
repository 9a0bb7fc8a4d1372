// Compressing layers for a push. gzip runs in zlib's thread pool. zstd uses zlib's own
// encoder where Node has one (22.15+), else the `zstd` tool (Debian package zstd), since
// Node 20's zlib has no zstd and fzstd only decompresses. Both are deterministic for the
// same input and settings, so pushing the same layer again gives the same digest.
import { spawn } from 'node:child_process';
import * as zlib from 'node:zlib';
import { Readable } from 'node:stream';
import { CairnError } from '@cairnfs/core';

export type PushCompression = 'gzip' | 'zstd';

type ZstdFactory = () => NodeJS.ReadWriteStream;
const nativeZstd = (zlib as unknown as { createZstdCompress?: ZstdFactory }).createZstdCompress;

/** The compressed bytes of `input`. */
export function compressStream(input: AsyncIterable<Uint8Array>, how: PushCompression): AsyncIterable<Buffer> {
  if (how === 'gzip') return through(input, zlib.createGzip({ chunkSize: 128 * 1024 }));
  if (nativeZstd) return through(input, nativeZstd());
  return zstdTool(input);
}

/** `input` piped through a transform, with the input's errors carried to the output. */
function through(input: AsyncIterable<Uint8Array>, t: NodeJS.ReadWriteStream): AsyncIterable<Buffer> {
  const src = Readable.from(input);
  src.on('error', (e) => (t as unknown as Readable).destroy(e));
  src.pipe(t as unknown as NodeJS.WritableStream);
  return t as unknown as AsyncIterable<Buffer>;
}

async function* zstdTool(input: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  const child = spawn('zstd', ['-q', '-c', '-3', '--no-progress'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { if (stderr.length < 4096) stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve(code));
  });
  exited.catch(() => undefined);
  // Feed stdin concurrently; a failure there is reported by the exit status or rethrown below.
  let feedError: unknown = null;
  const feeding = (async () => {
    try {
      for await (const c of input) {
        if (!child.stdin.write(c)) await new Promise<void>((r) => child.stdin.once('drain', r));
      }
    } catch (err) {
      feedError = err;
    } finally {
      child.stdin.end();
    }
  })();
  child.stdin.on('error', () => undefined);
  try {
    for await (const c of child.stdout) yield c as Buffer;
    await feeding;
    if (feedError) throw feedError;
    let code: number | null;
    try { code = await exited; } catch (err) {
      throw new CairnError('ERR_PREREQUISITES', 'zstd compression needs the zstd tool (Debian package zstd) on Node < 22.15', { cause: err });
    }
    if (code !== 0) throw new CairnError('ERR_BACKEND_FAILED', `zstd failed (exit ${code}): ${stderr.trim()}`);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}
