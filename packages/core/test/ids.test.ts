import { assertValidId, isValidId, normalizeParent, CairnError } from '@cairnfs/core';

describe('layer ids', () => {
  test.each(['a', 'A9', '_x', 'abc.def-ghi_1', 'x'.repeat(128), 'sha256-' + 'f'.repeat(64)])('accepts %s', (id) => {
    expect(isValidId(id)).toBe(true);
    expect(() => assertValidId(id)).not.toThrow();
  });

  test.each(['', '.', '..', '.hidden', '-flag', 'a/b', '../x', 'a b', 'x'.repeat(129), 'é', 'a\0b', 'a\nb'])(
    'rejects %j with ERR_INVALID_ID', (id) => {
      expect(isValidId(id)).toBe(false);
      let thrown: unknown;
      try { assertValidId(id); } catch (err) { thrown = err; }
      expect(thrown).toBeInstanceOf(CairnError);
      expect((thrown as CairnError).code).toBe('ERR_INVALID_ID');
    });

  test('rejects non-strings with ERR_INVALID_ID', () => {
    for (const v of [undefined, null, 7, {}, ['a']]) {
      expect(() => assertValidId(v)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ID' }));
    }
  });

  test('an absent parent is null, a bad parent is ERR_INVALID_ID', () => {
    expect(normalizeParent(undefined)).toBeNull();
    expect(normalizeParent(null)).toBeNull();
    expect(normalizeParent('')).toBeNull();
    expect(normalizeParent('p1')).toBe('p1');
    expect(() => normalizeParent('../p')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ID' }));
  });
});

describe('space errors', () => {
  test('ENOSPC and an unnamed EDQUOT (Node reports errno -122 as UNKNOWN) become ERR_NO_SPACE', async () => {
    const { translateSpaceError, errnoCode } = await import('@cairnfs/core');
    const unnamed = Object.assign(new Error('UNKNOWN: unknown error, write'), { code: 'UNKNOWN', errno: -122 });
    expect(errnoCode(unnamed)).toBe('EDQUOT');
    expect(translateSpaceError(unnamed, 'applying layer x')).toMatchObject({ code: 'ERR_NO_SPACE' });
    const described = Object.assign(new Error('write failed'), { code: 'Unknown system error -122', errno: -122 });
    expect(errnoCode(described)).toBe('EDQUOT');
    const enospc = Object.assign(new Error('ENOSPC'), { code: 'ENOSPC', errno: -28 });
    expect(translateSpaceError(enospc, 'x')).toMatchObject({ code: 'ERR_NO_SPACE' });
    const eio = Object.assign(new Error('EIO'), { code: 'EIO', errno: -5 });
    expect(translateSpaceError(eio, 'x')).toBe(eio);
  });
});

describe('layerNotFound', () => {
  test('names the layer as subject and in the message, and where the driver looked when given', async () => {
    const { layerNotFound } = await import('@cairnfs/core');
    expect(layerNotFound('abc')).toMatchObject({ code: 'ERR_LAYER_NOT_FOUND', subject: 'abc', message: 'layer abc does not exist' });
    expect(layerNotFound('abc', 'in /var/lib/cairn/vfs').message).toBe('layer abc does not exist in /var/lib/cairn/vfs');
  });
});
