// Registers scripts/ts-loader.mjs (see there): `node --import ./scripts/ts-register.mjs x.ts`.
import { register } from 'node:module';

register('./ts-loader.mjs', import.meta.url);
