// Tar-split records written by hand, in the format native/split_record.h describes, for
// the replay's tests: 'R' raw bytes, 'Z' a zero run, 'S' a file's size, 'F' a segment.
export const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
export const f64 = (n: number) => { const b = Buffer.alloc(8); b.writeDoubleBE(n); return b; };
export const raw = (bytes: Buffer) => Buffer.concat([Buffer.from('R'), u32(bytes.length), bytes]);
export const zeros = (n: number) => Buffer.concat([Buffer.from('Z'), u32(n)]);
export const size = (path: string, n: number) => Buffer.concat([Buffer.from('S'), u32(Buffer.byteLength(path)), Buffer.from(path), f64(n)]);
export const seg = (path: string, pos: number, len: number) => Buffer.concat([Buffer.from('F'), u32(Buffer.byteLength(path)), Buffer.from(path), f64(pos), f64(len)]);
