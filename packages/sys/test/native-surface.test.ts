// The typed addon surface (src/native.ts) is the whole addon: every name NativeBinding
// declares is exported by cairn_sys.node with the kind it declares, and the addon exports
// nothing the types do not know of. KINDS is checked against NativeBinding by the compiler
// (a missing or extra key fails `npm run typecheck`), the addon against KINDS here.
import { native, type NativeBinding } from '../src/native.js';

const KINDS: { [K in keyof NativeBinding]: 'function' | 'object' } = {
  constants: 'object',
  mount: 'function', mountAt: 'function', umount2: 'function', fsMount: 'function', hasNewMountApi: 'function',
  zstdLibrary: 'function', decoderMissing: 'function', SplitReplay: 'function', zstdCreate: 'function', zstdDecode: 'function', zstdFree: 'function',
  mknodSync: 'function', mknod: 'function',
  lsetxattrSync: 'function', lgetxattrSync: 'function', llistxattrSync: 'function', lremovexattrSync: 'function',
  lsetxattr: 'function', lgetxattr: 'function', llistxattr: 'function', lremovexattr: 'function',
  lutimesNsSync: 'function', flockSync: 'function', major: 'function', minor: 'function', makedev: 'function',
  populateSync: 'function',
  LayerApplier: 'function', tarLimits: 'object', sha256Hex: 'function', sha256Libcrypto: 'function', TarPacker: 'function',
  statDirSync: 'function', statPathsSync: 'function', readFileIntoSync: 'function', openBeneathSync: 'function',
  openDirBeneathSync: 'function', openatSync: 'function', mkdiratSync: 'function', mknodatSync: 'function',
  symlinkatSync: 'function', linkatSync: 'function', unlinkatSync: 'function', fchownFdSync: 'function', chmodFdSync: 'function',
  haveChmodFdSync: 'function', utimensFdSync: 'function', setxattratSync: 'function', readdirFdSync: 'function',
  cloneFdSync: 'function', copyFdSync: 'function', copyFd: 'function',
  fsyncPath: 'function', replaceFile: 'function', writeNewFiles: 'function', renameDurable: 'function',
  btrfsSubvolCreate: 'function', btrfsSnapshot: 'function', btrfsSubvolDestroy: 'function', btrfsGetFlags: 'function',
  btrfsSetFlags: 'function', btrfsSubvolId: 'function', btrfsSubvolChildren: 'function', btrfsFsInfo: 'function',
  btrfsQgroupLimit: 'function', btrfsQgroupDestroy: 'function',
  xfsGetProjectId: 'function', xfsSetProjectId: 'function', xfsSetProjectLimit: 'function', xfsGetProjectLimit: 'function',
  xfsQuotaState: 'function',
  makeUserNamespaceSync: 'function', idmappedMount: 'function', shiftOwnership: 'function', removeTree: 'function',
};

test('the addon exports exactly the names NativeBinding types, each of the declared kind', () => {
  const exported = Object.keys(native).sort();
  expect(exported).toEqual(Object.keys(KINDS).sort());
  for (const [name, kind] of Object.entries(KINDS)) expect([name, typeof native[name as keyof NativeBinding]]).toEqual([name, kind]);
});
