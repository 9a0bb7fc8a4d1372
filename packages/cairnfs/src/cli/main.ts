#!/usr/bin/env node
// The `cairn` command. Each group of subcommands lives in its own module under commands/
// and registers itself on the program here; every command opens the driver, does one
// thing and releases it. Locks are per operation, so every command works while a runtime
// (or another cairn) has the root open; `mount` records a hold owned by the store
// (`cli-mount:<name>`), which outlives this process and everyone's cleanup until `umount`.
import { createRequire } from 'node:module';
import { Command, CommanderError, Option } from 'commander';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ROOTLESS_UID_ENV, defaultRegistry } from '../index.js';
import { globals, UsageError, withStore } from './context.js';
import { exitCodeOf } from './exit-codes.js';
import { registerCompletionCommand } from './commands/completion.js';
import { registerContainerCommands } from './commands/containers.js';
import { registerHostCommands } from './commands/host.js';
import { registerImageCommands } from './commands/images.js';
import { registerMigrateCommand } from './commands/migrate.js';
import { registerStorageCommands } from './commands/storage.js';
import { printJson, printTable } from './output.js';
import { registryCommands } from './registry.js';

/** /var/lib/cairn, or for a rootless user (inside `cairn unshare`) a root in their home, as podman does. */
function defaultRoot(): string {
  if (!process.env[ROOTLESS_UID_ENV]) return '/var/lib/cairn';
  return join(process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share'), 'cairn');
}

// From src/cli and dist/cli alike, the package root is two levels up.
const { version } = createRequire(import.meta.url)('../../package.json') as { version: string };

const program = new Command('cairn')
  .description('Container image layers on Docker-grade storage drivers (overlay2, btrfs, vfs, …)')
  .version(version, '-V, --version', 'print the version of cairn and exit')
  .addOption(new Option('--root <dir>', 'storage root (rootless, inside `cairn unshare`: $XDG_DATA_HOME/cairn)').default(defaultRoot()).env('CAIRN_ROOT'))
  .option('--driver <name>', 'storage driver (default: auto-select as moby does)')
  .option('--storage-opt <key=value>', 'driver option, e.g. overlay2.size=10G (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .option('--json', 'machine-readable output (same as --format json)')
  .option('--bytes', 'sizes as byte counts instead of 1.2MB-style units')
  .option('--lock-timeout <ms>', 'how long to wait for a lock another process holds before failing with ERR_LOCKED (default 30000)')
  .addOption(new Option('--progress <mode>', 'progress on stderr: a bar on a terminal, else one line per step (auto), plain, json lines, or none')
    .choices(['auto', 'plain', 'json', 'none']).default('auto'))
  .configureHelp({ showGlobalOptions: true })
  .showHelpAfterError();

// One module per group of commands: adding a group is one import and one line here.
registerHostCommands(program);
registerImageCommands(program);
registerContainerCommands(program);
registerStorageCommands(program);
registerMigrateCommand(program);
registryCommands(program, {
  withStore: (fn) => withStore(program, (store) => fn(store)),
  print: (rows, columns) => (globals(program).json ? printJson(rows) : printTable(columns, rows.map((r) => columns.map((c) => String(r[c] ?? ''))))),
  json: () => globals(program).json === true,
});
// Last: the completion script is generated from every command registered above.
registerCompletionCommand(program, () => defaultRegistry.list().map((f) => f.name));

// Usage errors exit 2 rather than the process exiting inside commander.
for (const cmd of [program, ...program.commands]) cmd.exitOverride().showHelpAfterError();

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0 ? 0 : 2;
  } else if (err instanceof UsageError) {
    process.stderr.write(`cairn: ${err.message}\n`);
    process.exitCode = 2;
  } else {
    const code = (err as { code?: string }).code;
    process.stderr.write(`cairn: ${code && code.startsWith('ERR_') ? `${code}: ` : ''}${(err as Error).message ?? String(err)}\n`);
    process.exitCode = exitCodeOf(err);
  }
}
