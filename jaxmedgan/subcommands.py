"""The one dispatcher of a command group's sub-commands (`jaxmedgan privacy ...`, `jaxmedgan reader-study ...`)."""
from __future__ import annotations

import sys
from typing import Callable, Mapping


def dispatch(prog: str, commands: Mapping[str, Callable[[list[str]], int]], usage: str, argv: list[str]) -> int:
    """Runs `commands[argv[0]](argv[1:])` and returns its exit code. No argument prints `usage` and
    returns 2; -h / --help / help print it and return 0; an unknown name is exit 2 naming the choices."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage)
        return 0 if argv else 2
    if argv[0] not in commands:
        print(f"{prog}: unknown command {argv[0]!r}; expected one of {sorted(commands)}.\n\n" + usage,
              file=sys.stderr)
        return 2
    return commands[argv[0]](list(argv[1:]))
