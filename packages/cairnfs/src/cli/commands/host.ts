// Commands about the host and the driver: probe, doctor, info, unshare.
import type { Command } from 'commander';
import { ROOTLESS_UID_ENV, probe, rootlessReport, userNamespaceCommand, type ProbeResult } from '../../index.js';
import { driverOptions, rootOf, withStore } from '../context.js';
import { formatOf, listingOptions, printJson, printList, type Column } from '../output.js';

const status = (r: ProbeResult) => (r.chosen ? 'chosen' : r.usable ? 'usable' : 'unusable');
const probeJson = (r: ProbeResult) => ({
  driver: r.name, status: status(r), usable: r.usable, chosen: r.chosen === true, prior: r.prior === true,
  priority: r.priority, backingFs: r.backingFs ?? null, reason: r.reason ?? null, code: r.usable ? null : r.code ?? 'ERR_NOT_SUPPORTED',
  notes: r.notes ?? [],
});

function probeCommand(program: Command, name: string, description: string, withReasons: boolean): void {
  listingOptions(program.command(name).description(description)).action(async (_o: unknown, cmd: Command) => {
    const results = await probe({ root: rootOf(cmd), options: driverOptions(cmd) });
    const columns: Column<ProbeResult>[] = [
      { header: 'driver', value: (r) => r.name },
      { header: 'status', value: status },
      { header: 'backingFs', value: (r) => r.backingFs ?? '' },
      ...(withReasons ? [{ header: 'reason', value: (r: ProbeResult) => [r.reason, ...(r.notes ?? [])].filter(Boolean).join('; ') }] : []),
    ];
    printList(cmd, results, columns, probeJson);
    if (withReasons && formatOf(cmd) !== 'json') {
      process.stdout.write(`\nRootless${process.env[ROOTLESS_UID_ENV] ? ` (running in a user namespace for uid ${process.env[ROOTLESS_UID_ENV]})` : ''}:\n`);
      for (const f of rootlessReport()) process.stdout.write(`  ${f.ok ? 'ok  ' : 'MISS'} ${f.what}: ${f.detail}\n`);
    }
  });
}

export function registerHostCommands(program: Command): void {
  probeCommand(program, 'probe', 'which driver would be used here', false);
  probeCommand(program, 'doctor', 'which driver would be used, and why every other was rejected (with what to fix); and what running rootless needs', true);

  program.command('unshare').argument('[command...]', 'command to run (default: your shell)')
    .description('run a command as root of a new user namespace mapped with your /etc/subuid and /etc/subgid ranges (newuidmap), like podman unshare')
    .action(async (command: string[]) => {
      const child = await userNamespaceCommand(command, { stdio: 'inherit' });
      process.exitCode = await new Promise<number>((resolve) => child.once('exit', (c, signal) => resolve(c ?? (signal ? 128 : 1))));
    });

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
