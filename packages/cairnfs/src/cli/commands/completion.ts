// cairn completion bash|zsh|fish: shell completion generated from the command tree itself,
// so every command and option (and the choices of --format, --progress, --driver) is
// offered without a list to keep in step by hand.
import { Argument, type Command, type Option } from 'commander';

export const SHELLS = ['bash', 'zsh', 'fish'] as const;

interface Spec {
  name: string;
  description: string;
  options: Option[];
  /** Whether positional arguments are paths (import) rather than names. */
  files: boolean;
}

const takesValue = (o: Option) => o.required || o.optional;
const flags = (o: Option) => [o.short, o.long].filter((f): f is string => Boolean(f));
const quoteSh = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
/** Value completions of an option: its choices, directories for --root, files for -o. */
function values(o: Option, drivers: readonly string[]): string[] | 'dir' | 'file' | null {
  if (o.argChoices) return o.argChoices;
  if (o.long === '--driver' || o.long === '--to' || o.long === '--from') return [...drivers];
  if (o.long === '--root') return 'dir';
  if (o.long === '--output') return 'file';
  return null;
}

function specs(program: Command): Spec[] {
  return program.commands.map((c) => ({
    name: c.name(),
    description: c.description(),
    options: c.options as Option[],
    files: c.name() === 'import',
  }));
}

function bash(program: Command, drivers: readonly string[]): string {
  const globals = program.options as Option[];
  const all = [...globals, ...program.commands.flatMap((c) => c.options as Option[])];
  const withValue = [...new Set(all.filter(takesValue).flatMap(flags))];
  const valueCases = [...new Map(all.filter(takesValue).map((o) => [flags(o).join('|'), o])).values()].map((o) => {
    const v = values(o, drivers);
    const reply = v === 'dir' ? 'COMPREPLY=($(compgen -d -- "$cur"))' : v === 'file' ? 'COMPREPLY=($(compgen -f -- "$cur"))'
      : v ? `COMPREPLY=($(compgen -W ${quoteSh(v.join(' '))} -- "$cur"))` : 'COMPREPLY=()';
    return `    ${flags(o).join('|')}) ${reply}; return ;;`;
  });
  const cmdCases = specs(program).map((s) =>
    `    ${s.name}) opts=${quoteSh([...s.options.flatMap(flags), '--help'].join(' '))}; files=${s.files ? 1 : 0} ;;`);
  return `# bash completion for cairn. Load it with: source <(cairn completion bash)
_cairn() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="" cmd="" opts="" files=0 i w
  [ "$COMP_CWORD" -gt 0 ] && prev="\${COMP_WORDS[COMP_CWORD-1]}"
  local with_value=" ${withValue.join(' ')} "
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    if [[ "$with_value" == *" $w "* ]]; then ((i++)); continue; fi
    [[ "$w" == -* ]] && continue
    cmd="$w"; break
  done
  case "$prev" in
${valueCases.join('\n')}
  esac
  local global=${quoteSh([...globals.flatMap(flags), '--help'].join(' '))}
  if [ -z "$cmd" ]; then
    if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$global" -- "$cur"))
    else COMPREPLY=($(compgen -W ${quoteSh(program.commands.map((c) => c.name()).join(' '))} -- "$cur")); fi
    return
  fi
  case "$cmd" in
${cmdCases.join('\n')}
  esac
  if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$opts $global" -- "$cur"))
  elif [ "$cmd" = completion ]; then COMPREPLY=($(compgen -W ${quoteSh(SHELLS.join(' '))} -- "$cur"))
  elif [ "$files" = 1 ]; then COMPREPLY=($(compgen -f -- "$cur"))
  else COMPREPLY=(); fi
}
complete -F _cairn cairn
`;
}

function zsh(program: Command, drivers: readonly string[]): string {
  const esc = (s: string) => s.replace(/\\/g, '\\\\').replace(/'/g, `'\\''`).replace(/([[\]:])/g, '\\$1');
  const optSpec = (o: Option): string => {
    const v = values(o, drivers);
    const action = !takesValue(o) ? '' : v === 'dir' ? ':dir:_files -/' : v === 'file' ? ':file:_files' : v ? `:value:(${v.join(' ')})` : ':value: ';
    const fl = flags(o);
    const names = fl.length > 1 ? `(${fl.join(' ')})'{${fl.join(',')}}'` : fl[0]!;
    return `'${names}[${esc(o.description)}]${action}'`;
  };
  const commands = specs(program).map((s) => `    '${s.name}:${esc(s.description)}'`);
  const cases = specs(program).map((s) => {
    const pos = s.name === 'completion' ? ` '1:shell:(${SHELLS.join(' ')})'` : s.files ? " '*:file:_files'" : '';
    return `      ${s.name}) _arguments ${[...s.options.map(optSpec)].join(' ')}${pos} ;;`;
  });
  return `#compdef cairn
# zsh completion for cairn. Load it with: source <(cairn completion zsh)  (after compinit)
_cairn() {
  local curcontext="$curcontext" state line
  local -a commands
  commands=(
${commands.join('\n')}
  )
  _arguments -C ${(program.options as Option[]).map(optSpec).join(' ')} '1:command:->command' '*::arg:->args'
  case $state in
    command) _describe 'command' commands ;;
    args)
      case $line[1] in
${cases.join('\n')}
      esac ;;
  esac
}
compdef _cairn cairn
`;
}

function fish(program: Command, drivers: readonly string[]): string {
  const q = (s: string) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  const optLine = (o: Option, cond: string): string => {
    const parts = ['complete -c cairn'];
    if (cond) parts.push(`-n ${q(cond)}`);
    if (o.short) parts.push(`-s ${o.short.slice(1)}`);
    if (o.long) parts.push(`-l ${o.long.slice(2)}`);
    const v = values(o, drivers);
    if (takesValue(o)) parts.push(v === 'dir' || v === 'file' ? '-r -F' : v ? `-x -a ${q(v.join(' '))}` : '-x');
    parts.push(`-d ${q(o.description)}`);
    return parts.join(' ');
  };
  const lines = ['# fish completion for cairn. Load it with: cairn completion fish | source', 'complete -c cairn -f'];
  for (const o of program.options as Option[]) lines.push(optLine(o, ''));
  for (const s of specs(program)) {
    lines.push(`complete -c cairn -n '__fish_use_subcommand' -a ${s.name} -d ${q(s.description)}`);
    const cond = `__fish_seen_subcommand_from ${s.name}`;
    for (const o of s.options) lines.push(optLine(o, cond));
    if (s.files) lines.push(`complete -c cairn -n ${q(cond)} -F`);
  }
  lines.push(`complete -c cairn -n '__fish_seen_subcommand_from completion' -a ${q(SHELLS.join(' '))}`);
  return lines.join('\n') + '\n';
}

export function registerCompletionCommand(program: Command, drivers: () => readonly string[]): void {
  program.command('completion').description('print a shell completion script: source <(cairn completion bash)')
    .addArgument(new Argument('<shell>', 'bash, zsh or fish').choices([...SHELLS]))
    .action((shell: (typeof SHELLS)[number]) => {
      const make = { bash, zsh, fish }[shell];
      process.stdout.write(make(program, drivers()));
    });
}
