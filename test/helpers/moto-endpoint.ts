/** Inside a test: the moto server of the run (test/helpers/moto.ts). */
import { inject } from 'vitest';
import './moto';

/** The moto server the global setup started; throws its install or start error (no silent skip). */
export function motoEndpoint(): { endpoint: string; bucket: string; region: string } {
  const moto = inject('moto');
  if ('error' in moto) throw new Error(moto.error);
  return moto;
}
