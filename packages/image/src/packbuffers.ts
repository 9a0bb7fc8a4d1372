// The buffers an export is written into, in order: small pieces (headers, padding, JSON)
// are copied in, the addon's replay fills the rest in place. A buffer is handed on whole
// when full, the last one as far as it got. Who supplies them decides their life: fresh
// ones for a public Readable (a consumer may keep any chunk), two reused ones for
// writeExportTo (@cairnfs/archive), which asks for the next only once the one before the
// last is written.

export class PackBuffers {
  private buf: Buffer | null = null;
  private used = 0;

  /**
   * `reused`: the buffers are writeExportTo's two, which it only writes to a file and keeps
   * until the pack ends (DirectPack in @cairnfs/archive): a fill's hash may then go on after
   * the fill until the next one.
   */
  constructor(private readonly next: () => Buffer, readonly reused = false) {}

  /** The unfilled rest of the current buffer (a new one after the last was handed on). */
  room(): Buffer {
    this.buf ??= this.next();
    return this.buf.subarray(this.used);
  }

  /** `n` bytes were written at the start of `room()`; yields the buffer if that filled it. */
  *advance(n: number): Generator<Buffer> {
    this.used += n;
    if (this.buf !== null && this.used === this.buf.length) {
      const full = this.buf;
      this.buf = null;
      this.used = 0;
      yield full;
    }
  }

  /** Copies `bytes` in, yielding each buffer it fills. */
  *put(bytes: Uint8Array): Generator<Buffer> {
    for (let off = 0; off < bytes.length;) {
      const room = this.room();
      const n = Math.min(room.length, bytes.length - off);
      room.set(bytes.subarray(off, off + n));
      off += n;
      yield* this.advance(n);
    }
  }

  /** Yields what the current buffer holds, if anything: the end of the export. */
  *end(): Generator<Buffer> {
    if (this.buf !== null && this.used > 0) yield this.buf.subarray(0, this.used);
    this.buf = null;
    this.used = 0;
  }
}
