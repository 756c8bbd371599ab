"""The command line before click sees it: global options are accepted on either side of the subcommand.

Operators write `cronwarden refresh-token-cleanup --quiet` as often as `cronwarden --quiet
refresh-token-cleanup`; click knows a group's options only before its subcommand, so the global ones
found after it are moved in front, and `--json`, which every listing command defines for itself, is
moved behind the subcommand when it was given before it.
"""

from __future__ import annotations

from typing import Any

GLOBAL_VALUED = ("--config", "--database-url", "--log-format", "--metrics-file", "--pushgateway")
GLOBAL_FLAGS = ("--quiet", "-q", "--verbose", "-v")
COMMAND_FLAGS = ("--json",)


def _name(arg: str) -> str:
    return arg.partition("=")[0] if arg.startswith("--") else arg


def command_word(argv: list[str]) -> str | None:
    """The subcommand's name: the first word that is neither an option nor a global option's value."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--":
            return None
        if arg in GLOBAL_VALUED:
            skip = True
            continue
        if not arg.startswith("-"):
            return arg
    return None


def log_format(argv: list[str]) -> str:
    """The --log-format given anywhere on the line, so that even an error before parsing ends in that format."""
    chosen = "text"
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--log-format" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--log-format="):
            value = arg.partition("=")[2]
        else:
            continue
        if value in ("text", "json"):
            chosen = value
    return chosen


def _valued_options(command: Any) -> set[str]:
    """The options of a click command that take a value (whose next word is theirs, whatever it looks like)."""
    names: set[str] = set()
    for param in getattr(command, "params", []):
        if type(param).__name__.endswith("Option") and not getattr(param, "is_flag", False) \
                and not getattr(param, "count", False):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def _own_options(command: Any) -> set[str]:
    names: set[str] = set()
    for param in getattr(command, "params", []):
        if type(param).__name__.endswith("Option"):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def hoist(argv: list[str], root: Any) -> list[str]:
    """argv with global options moved before the subcommand and --json moved after it (see the module)."""
    end = argv.index("--") if "--" in argv else len(argv)
    args, tail = argv[:end], argv[end:]
    front: list[str] = []
    moved_back: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if _name(args[i]) in COMMAND_FLAGS:
            moved_back.append(args[i])
        else:
            front.append(args[i])
            if args[i] in GLOBAL_VALUED and i + 1 < len(args):
                i += 1
                front.append(args[i])
        i += 1
    command, path = root, []
    while i < len(args) and hasattr(command, "get_command") and not args[i].startswith("-"):
        sub = command.get_command(None, args[i])
        if sub is None:
            break
        command = sub
        path.append(args[i])
        i += 1
    if command is root:
        return front + moved_back + args[i:] + tail
    own, valued = _own_options(command), _valued_options(command)
    rest: list[str] = []
    while i < len(args):
        arg, name = args[i], _name(args[i])
        if name in own:
            rest.append(arg)
            if arg in valued and i + 1 < len(args):
                i += 1
                rest.append(args[i])
        elif name in GLOBAL_FLAGS or name in GLOBAL_VALUED:
            front.append(arg)
            if arg in GLOBAL_VALUED and i + 1 < len(args):
                i += 1
                front.append(args[i])
        else:
            rest.append(arg)
        i += 1
    return front + path + rest + moved_back + tail
