/**
 * SIMULATION of many compute VMs on one machine, for the burst benchmark: one process hosts the
 * compute workers of several computes (in production each runs alone inside its own VM), each on
 * its own task queue over its own PGDATA and its own real Postgres. Prints "vm host ready" once
 * every worker polls; SIGTERM drains them.
 *   node --import tsx bench/compute-vm-host.ts <pgdata root> <compute id>...
 */
import path from 'node:path';
import { cliConfig } from '../client/context';
import { createComputeWorker } from '../workers/compute';

const [root, ...computeIds] = process.argv.slice(2);
if (!root || computeIds.length === 0) throw new Error('usage: compute-vm-host.ts <pgdata root> <compute id>...');
const config = cliConfig();
const handles = await Promise.all(computeIds.map((computeId) => createComputeWorker(config, { computeId, pgdata: path.join(root, computeId, 'pgdata') })));
const running = handles.map((h) => h.worker.run());
console.log(`vm host ready: ${computeIds.length} compute workers`);
await Promise.all(running);
await Promise.all(handles.map((h) => h.connection.close()));
