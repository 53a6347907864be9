"""Entry point: parses arguments, loads plugins, dispatches, and maps errors to exit codes.

Exit codes: 0 every cell ok; 1 some cell failed; 2 usage or suite errors (printed without a
traceback); 130 interrupted (finished cells are kept, a re-run resumes).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import UserError
from ..plugins import Plugins, load_plugins
from . import ls, publish, report, run, validate

COMMANDS = {"run": run, "validate": validate, "ls": ls, "report": report, "publish": publish}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="b2s-bench",
        description="Benchmark neural-network compressors on the same models, data and size rules.",
    )
    parser.add_argument("--version", action="version", version=f"b2s-bench {__version__}")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                        help="load a local plugin file (repeatable; also $B2S_BENCH_PLUGINS)")
    parser.add_argument("--disable", action="append", default=[], metavar="NAME",
                        help="do not load the plugin NAME (repeatable; also $B2S_BENCH_DISABLE)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for run.json
    try:
        plugins: Plugins = load_plugins(files=args.plugin, disable=args.disable)
        for warning in plugins.warnings():
            if args.command != "ls":
                print(f"warning: {warning}", file=sys.stderr)
        return int(COMMANDS[args.command].main(args, plugins) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished cells are saved; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `b2s-bench ls ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
