import { MountRefs, KeyedMutex, CairnError } from '@cairnfs/core';

function recordingHooks() {
  const events: string[] = [];
  let active = 0;
  let maxActive = 0;
  const hooks = {
    async mount(id: string) {
      active++; maxActive = Math.max(maxActive, active);
      events.push(`mount ${id}`);
      await new Promise((r) => setTimeout(r, 5));
      active--;
      return `/mnt/${id}`;
    },
    async unmount(id: string) {
      active++; maxActive = Math.max(maxActive, active);
      events.push(`unmount ${id}`);
      await new Promise((r) => setTimeout(r, 5));
      active--;
    },
  };
  return { hooks, events, maxActive: () => maxActive };
}

describe('MountRefs', () => {
  test('64 concurrent gets of one layer mount once and return one path; 64 puts unmount once', async () => {
    const { hooks, events } = recordingHooks();
    const refs = new MountRefs(hooks);
    const paths = await Promise.all(Array.from({ length: 64 }, () => refs.get('a')));
    expect(new Set(paths)).toEqual(new Set(['/mnt/a']));
    expect(refs.count('a')).toBe(64);
    await Promise.all(Array.from({ length: 64 }, () => refs.put('a')));
    expect(events).toEqual(['mount a', 'unmount a']);
    expect(refs.isMounted('a')).toBe(false);
  });

  test('put without get is ERR_NOT_MOUNTED', async () => {
    const refs = new MountRefs(recordingHooks().hooks);
    await expect(refs.put('x')).rejects.toMatchObject({ code: 'ERR_NOT_MOUNTED' });
    await expect(refs.put('x')).rejects.toBeInstanceOf(CairnError);
  });

  test('a failed mount leaves no reference behind and the next get retries', async () => {
    let fail = true;
    const refs = new MountRefs({
      async mount(id) { if (fail) throw new Error('boom'); return `/m/${id}`; },
      async unmount() {},
    });
    await expect(refs.get('a')).rejects.toThrow('boom');
    expect(refs.count('a')).toBe(0);
    fail = false;
    await expect(refs.get('a')).resolves.toBe('/m/a');
  });

  test('a failed unmount keeps the mount counted so put can be retried', async () => {
    let fail = true;
    const refs = new MountRefs({
      async mount(id) { return `/m/${id}`; },
      async unmount() { if (fail) throw new Error('EBUSY'); },
    });
    await refs.get('a');
    await expect(refs.put('a')).rejects.toThrow('EBUSY');
    expect(refs.count('a')).toBe(1);
    fail = false;
    await refs.put('a');
    expect(refs.isMounted('a')).toBe(false);
  });

  test('unmountAll unmounts every layer regardless of count', async () => {
    const { hooks, events } = recordingHooks();
    const refs = new MountRefs(hooks);
    await refs.get('a'); await refs.get('a'); await refs.get('b');
    expect(await refs.unmountAll()).toEqual([]);
    expect(events.filter((e) => e.startsWith('unmount')).sort()).toEqual(['unmount a', 'unmount b']);
    expect(refs.isMounted('a') || refs.isMounted('b')).toBe(false);
  });
});

describe('KeyedMutex', () => {
  test('calls with one key never overlap; calls with different keys do', async () => {
    const mutex = new KeyedMutex();
    let inA = 0; let maxInA = 0; let overlapAB = false; let inB = 0;
    const work = (key: string) => mutex.run(key, async () => {
      if (key === 'a') { inA++; maxInA = Math.max(maxInA, inA); if (inB) overlapAB = true; }
      else { inB++; if (inA) overlapAB = true; }
      await new Promise((r) => setTimeout(r, 2));
      if (key === 'a') inA--; else inB--;
    });
    await Promise.all([...Array.from({ length: 20 }, () => work('a')), ...Array.from({ length: 20 }, () => work('b'))]);
    expect(maxInA).toBe(1);
    expect(overlapAB).toBe(true);
    expect(mutex.isBusy('a')).toBe(false);
  });

  test('a rejected call releases the key for the next one', async () => {
    const mutex = new KeyedMutex();
    await expect(mutex.run('k', async () => { throw new Error('x'); })).rejects.toThrow('x');
    await expect(mutex.run('k', async () => 5)).resolves.toBe(5);
  });
});
