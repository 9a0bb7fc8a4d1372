// Paths of the layer store, after moby's image/<driver>/ tree:
//   layerdb/sha256/<chain hex>/{diff,parent,size,tar-size,cache-id,tar-split.gz,exact}
//   layerdb/mounts/<container>/{mount-id,parent,image}
//   layerdb/tmp/                  staging dirs and intent-<cache id> files (see store.ts)
//   imagedb/content/sha256/<image hex>   the config JSON, exactly as imported
//   repositories.json             { "Repositories": { name: { "name:tag": image id } } }
import { join } from 'node:path';
import { hexOf } from './digest.js';

export class StoreLayout {
  constructor(readonly dir: string) {}
  get layerDb(): string { return join(this.dir, 'layerdb', 'sha256'); }
  layer(chainId: string): string { return join(this.layerDb, hexOf(chainId)); }
  get mounts(): string { return join(this.dir, 'layerdb', 'mounts'); }
  mount(name: string): string { return join(this.mounts, name); }
  get tmp(): string { return join(this.dir, 'layerdb', 'tmp'); }
  intent(cacheId: string): string { return join(this.tmp, `intent-${cacheId}`); }
  get images(): string { return join(this.dir, 'imagedb', 'content', 'sha256'); }
  image(id: string): string { return join(this.images, hexOf(id)); }
  get repositories(): string { return join(this.dir, 'repositories.json'); }
}
