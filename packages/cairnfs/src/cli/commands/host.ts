// Commands about the host and the driver: probe, doctor, info.
import type { Command } from 'commander';
import { probe, type ProbeResult } from '../../index.js';
import { driverOptions, rootOf, withStore } from '../context.js';
import { formatOf, listingOptions, printJson, printList, type Column } from '../output.js';

const status = (r: ProbeResult) => (r.chosen ? 'chosen' : r.usable ? 'usable' : 'unusable');
const probeJson = (r: ProbeResult) => ({
  driver: r.name, status: status(r), usable: r.usable, chosen: r.chosen === true, prior: r.prior === true,
  priority: r.priority, backingFs: r.backingFs ?? null, reason: r.reason ?? null, code: r.usable ? null : r.code ?? 'ERR_NOT_SUPPORTED',
});

function probeCommand(program: Command, name: string, description: string, withReasons: boolean): void {
  listingOptions(program.command(name).description(description)).action(async (_o: unknown, cmd: Command) => {
    const results = await probe({ root: rootOf(cmd), options: driverOptions(cmd) });
    const columns: Column<ProbeResult>[] = [
      { header: 'driver', value: (r) => r.name },
      { header: 'status', value: status },
      { header: 'backingFs', value: (r) => r.backingFs ?? '' },
      ...(withReasons ? [{ header: 'reason', value: (r: ProbeResult) => r.reason ?? '' }] : []),
    ];
    printList(cmd, results, columns, probeJson);
  });
}

export function registerHostCommands(program: Command): void {
  probeCommand(program, 'probe', 'which driver would be used here', false);
  probeCommand(program, 'doctor', 'which driver would be used, and why every other was rejected (with what to fix)', true);

  listingOptions(program.command('info').description('status of the driver in use, and what the store holds'))
    .action((_o: unknown, cmd: Command) => withStore(cmd, async (store, driver) => {
      const status = await driver.status();
      const counts = { images: store.images().length, layers: store.layers().length, containers: store.containers().length };
      if (formatOf(cmd) === 'json') {
        printJson({ driver: driver.name, home: driver.home, status: Object.fromEntries(status), ...counts });
        return;
      }
      const rows = [['Storage Driver', driver.name], ['Home', driver.home], ...status,
        ['Images', String(counts.images)], ['Layers', String(counts.layers)], ['Containers', String(counts.containers)]];
      for (const [k, v] of rows) process.stdout.write(`${k}: ${v}\n`);
    }));
}
