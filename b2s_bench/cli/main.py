"""Entry point: parses arguments, loads plugins, dispatches, and maps errors to exit codes.

Exit codes (:mod:`b2s_bench.cli.exits`): 0 every cell ok; 1 some cell failed; 2 usage or suite
errors (printed without a traceback); 3 a prerequisite is missing here (data, weights, a package),
with what to do; 4 a file could not be written (a full or read-only folder, named; no cell is
marked failed for it); 130 interrupted (finished cells are kept, a re-run resumes); 143 terminated
by SIGTERM, which stops a run the way Ctrl-C does.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle threads sleep instead of spinning. On small shared machines,
# and with several worker processes each with its own threads, spinning made CPU work up to 10x
# slower; a user's own setting wins. (`import b2s_bench` is lazy, so torch is not loaded yet.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import errno  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from typing import Any  # noqa: E402

from .. import __version__  # noqa: E402
from ..errors import CannotWrite, MissingPrerequisite, UserError  # noqa: E402
from ..plugins import Plugins, load_plugins  # noqa: E402
from ..store.records import cannot_write  # noqa: E402
from . import answers, compare, exits, ls, publish, report, results, run, show, status, validate  # noqa: E402

COMMANDS = {
    "run": run,
    "validate": validate,
    "status": status,
    "ls": ls,
    "show": show,
    "report": report,
    "publish": publish,
    "results": results,
    "compare": compare,
}


def _global_parser(add_help: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="b2s-bench",
        add_help=add_help,
        description="Benchmark neural-network compressors on the same models, data and size rules.",
        epilog="Exit codes: 0 all ok, 1 some cell failed, 2 usage or suite error, 3 missing prerequisite "
        "(data, weights, a package), 4 could not write (a full or read-only folder), 130 interrupted, "
        "143 terminated (SIGTERM).",
    )
    parser.add_argument("--version", action="version", version=f"b2s-bench {__version__}")
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE.py",
        help="load a local plugin file (repeatable; also $B2S_BENCH_PLUGINS)",
    )
    parser.add_argument(
        "--disable",
        action="append",
        default=[],
        metavar="NAME",
        help="do not load the plugin NAME (repeatable; also $B2S_BENCH_DISABLE)",
    )
    return parser


def build_parser(plugins: Plugins | None = None) -> argparse.ArgumentParser:
    """The whole parser; options that plugins own are added to the subcommands they name."""
    parser = _global_parser(add_help=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        sp = module.add_parser(sub)
        if plugins is not None:
            for option in plugins.cli_options.for_command(name):
                kind: dict[str, str] = {"action": "store_const", "const": "yes"} if option.switch else {"metavar": option.metavar}
                if option.repeat:
                    kind["action"] = "append"
                sp.add_argument(option.flag, dest=option.dest, default=None, help=option.help + " (from a plugin)", **kind)
    return parser


def plugin_option_values(args: argparse.Namespace, plugins: Plugins) -> dict[str, Any]:
    """The values of plugin-owned options given to this command, by flag."""
    values = {o.flag: getattr(args, o.dest, None) for o in plugins.cli_options.for_command(args.command)}
    # a repeated option's list becomes a tuple: the values travel in the (hashable) run plan to workers
    return {flag: tuple(v) if isinstance(v, list) else v for flag, v in values.items()}


def apply_plugin_options(plugins: Plugins, values: Mapping[str, Any]) -> None:
    """Hand each plugin-owned option its value (also called in every worker process)."""
    for flag, value in values.items():
        option = plugins.cli_options.registry.get(flag).option
        option.apply(value)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, so it stops as on Ctrl-C: the executor stops its workers and
    the records of finished cells stay (a plain SIGTERM ended the process and left workers running)."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    # only the main thread may set handlers; the previous one is restored (main() is also called in-process)
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main else None
    try:
        return _main(argv)
    finally:
        if on_main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    early, rest = _global_parser(add_help=False).parse_known_args(argv)  # which plugins to load
    if not rest or rest[0] in ("-h", "--help"):  # the command list needs no plugin, so no torch: fast
        build_parser(None).parse_args(argv)  # prints the help, or that a command is missing, and exits
    key = answers.answer_key(rest, early.plugin, early.disable) if answers.wanted(rest) else None
    if key is not None:  # `ls compressors`, `show quantize`: asked before with these plugins, no plugin import
        kept = answers.read_answer(key)
        if kept is not None:
            sys.stdout.write(kept)
            return 0
    try:
        plugins: Plugins = load_plugins(files=early.plugin, disable=early.disable)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return exits.USAGE
    args = build_parser(plugins).parse_args(argv)
    args.argv = argv  # the command line, for run.json
    if key is None:
        return _dispatch(args, plugins)
    with answers.Recorder(key) as recorder:
        code = _dispatch(args, plugins)
    recorder.keep(code, getattr(args, "answer_kept", False))
    return code


def _dispatch(args: argparse.Namespace, plugins: Plugins) -> int:
    try:
        # ls and show list failures themselves (`ls plugins`), but a local file the user named is said by every command
        for warning in plugins.warnings(local_only=args.command in ("ls", "show")):
            print(f"warning: {warning}", file=sys.stderr)
        args.plugin_options = plugin_option_values(args, plugins)
        apply_plugin_options(plugins, args.plugin_options)
        return int(COMMANDS[args.command].main(args, plugins) or 0)
    except MissingPrerequisite as e:
        print(f"error: {e}", file=sys.stderr)
        return exits.MISSING
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return exits.USAGE
    except CannotWrite as e:
        print(f"error: {e}", file=sys.stderr)
        return exits.CANNOT_WRITE
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"\n{what}: finished cells are saved; run the same command again to resume", file=sys.stderr)
        return exits.TERMINATED if isinstance(e, Terminated) else exits.INTERRUPTED
    except BrokenPipeError:  # `b2s-bench ls ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as e:  # a writer that does not go through write_atomic (a plugin's, a mkdir); not EACCES,
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # which reading a file can raise too
            raise
        print(f"error: {cannot_write(e.filename or '?', e)}", file=sys.stderr)
        return exits.CANNOT_WRITE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
