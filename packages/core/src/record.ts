import { readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CairnError, errnoCode } from './errors.js';
import { fsyncDir, writeFileAtomic } from './staging.js';

/**
 * A small typed JSON record on disk, one file each (a layer's metadata, a pool's state):
 * written atomically and durably (writeFileAtomic: a crash leaves the old record or the
 * new one, never half), read back through a validator so a corrupt or hand-edited file is
 * a clear error naming the file, never a half-typed object.
 */
export class RecordFile<T> {
  /**
   * @param what   what the records are, for messages ("vfs layer metadata")
   * @param check  returns the record when `raw` is a valid one (it may normalise it), or a
   *               short reason why not
   * @param repair what a person can do about a bad file ("remove the layer's directory")
   */
  constructor(
    private readonly what: string,
    private readonly check: (raw: unknown) => T | string,
    private readonly repair: string,
  ) {}

  /** The record at `path`, or undefined when there is none. ERR_BACKEND_FAILED when it is unreadable or malformed. */
  async read(path: string): Promise<T | undefined> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw this.bad(path, `cannot be read (${errnoCode(err) ?? String(err)})`, err);
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw this.bad(path, 'is not valid JSON', err);
    }
    const checked = this.check(raw);
    if (typeof checked === 'string') throw this.bad(path, `is malformed: ${checked}`);
    return checked;
  }

  /** Like read, but a missing record is an error too. */
  async require(path: string): Promise<T> {
    const record = await this.read(path);
    if (record === undefined) throw this.bad(path, 'is missing');
    return record;
  }

  async write(path: string, record: T): Promise<void> {
    await writeFileAtomic(path, JSON.stringify(record));
  }

  /** Removes the record and makes the removal durable. */
  async remove(path: string): Promise<void> {
    await rm(path, { force: true });
    await fsyncDir(dirname(path)).catch(() => undefined);
  }

  private bad(path: string, why: string, cause?: unknown): CairnError {
    return new CairnError('ERR_BACKEND_FAILED', `${this.what} ${path} ${why}; ${this.repair}`,
      cause === undefined ? { subject: path } : { subject: path, cause });
  }
}
