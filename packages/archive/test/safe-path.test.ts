import { classifyWhiteout, splitEntryPath } from '@cairnfs/archive';

describe('splitEntryPath (pure)', () => {
  test.each([
    ['etc/hosts', ['etc', 'hosts']],
    ['./etc//hosts', ['etc', 'hosts']],
    ['etc/./hosts/', ['etc', 'hosts']],
    ['./', []],
    ['.', []],
    ['', []],
    ['.wh..wh..opq', ['.wh..wh..opq']],
    ['a/..b/c..', ['a', '..b', 'c..']],
  ])('normalises %j to %j', (name, parts) => {
    expect(splitEntryPath(name)).toEqual(parts);
  });

  test.each([
    ['../etc', 'ERR_UNSAFE_ARCHIVE'],
    ['a/../../b', 'ERR_UNSAFE_ARCHIVE'],
    ['a/..', 'ERR_UNSAFE_ARCHIVE'],
    ['/etc/passwd', 'ERR_UNSAFE_ARCHIVE'],
    ['//etc', 'ERR_UNSAFE_ARCHIVE'],
    ['a\0b', 'ERR_UNSAFE_ARCHIVE'],
  ])('refuses %j', (name, code) => {
    expect(() => splitEntryPath(name)).toThrow(expect.objectContaining({ code, subject: name }));
  });

  test('a NUL is shown escaped in the message, not raw', () => {
    try {
      splitEntryPath('x\0y');
      throw new Error('not refused');
    } catch (err) {
      expect((err as Error).message).toContain('x\\x00y');
    }
  });
});

describe('classifyWhiteout (pure)', () => {
  test('names whiteouts, opaque markers and aufs metadata', () => {
    expect(classifyWhiteout('hosts')).toEqual({ kind: 'normal' });
    expect(classifyWhiteout('.wh.hosts')).toEqual({ kind: 'whiteout', target: 'hosts' });
    expect(classifyWhiteout('.wh..hidden')).toEqual({ kind: 'whiteout', target: '.hidden' });
    expect(classifyWhiteout('.wh..wh..opq')).toEqual({ kind: 'opaque' });
    expect(classifyWhiteout('.wh..wh.plnk')).toEqual({ kind: 'meta' });
  });

  test.each(['.wh.', '.wh..', '.wh...'])('refuses the whiteout %j', (base) => {
    expect(() => classifyWhiteout(base)).toThrow(expect.objectContaining({ code: 'ERR_UNSAFE_ARCHIVE' }));
  });
});
