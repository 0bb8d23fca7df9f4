"""The ``monai-stroke`` command line: parse, call the library, print.

Commands live in ``monai_stroke/commands/`` and are imported only when used, so ``monai-stroke --help``
does not pay for importing torch and MONAI. Errors a user can fix become one ``error: ...`` line on
stderr with exit status 2; anything else is an internal error (status 1). ``-v/--verbose`` shows
tracebacks and debug logging.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback

import click

from monai_stroke import __version__
from monai_stroke.errors import find_user_error

__all__ = ["cli", "main"]

# command name -> "module:attribute"; a new command is one line here plus its module
COMMANDS: dict[str, str] = {
    "atl": "monai_stroke.commands.atl:atl",
    "atlas": "monai_stroke.commands.atlas:atlas",
    "demo": "monai_stroke.commands.demo:demo",
    "ingest": "monai_stroke.commands.ingest:ingest",
    "manifest": "monai_stroke.commands.manifest:manifest",
    "predict": "monai_stroke.commands.predict:predict",
    "register": "monai_stroke.commands.register:register",
    "synth": "monai_stroke.commands.synth:synth",
    "window-search": "monai_stroke.commands.window_search:window_search",
}


class _State:
    verbose = False


class LazyGroup(click.Group):
    """A click group that imports each command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module_name, attr = COMMANDS[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)


class _LevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelFormatter())
    root = logging.getLogger("monai_stroke")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="monai-stroke")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging and full tracebacks.")
def cli(verbose: bool) -> None:
    """monai-stroke: head CT -> hemorrhage check -> ASPECTS regions -> stroke report."""
    _State.verbose = verbose
    configure_logging(verbose)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status (and exits with it when run as a script)."""
    args = sys.argv[1:] if argv is None else list(argv)
    _State.verbose = any(a in ("-v", "--verbose") for a in args)
    status = 0
    try:
        result = cli.main(args=args, prog_name="monai-stroke", standalone_mode=False)
        status = result if isinstance(result, int) else 0
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        status = 130
    except click.ClickException as exc:
        # usage errors (unknown option, missing argument, bad choice) are bad input too
        if _State.verbose:
            traceback.print_exc()
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        click.echo(f"error: {_one_line(exc.format_message())}{hint}", err=True)
        status = 2
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        status = 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence before a user sees a traceback
        if _State.verbose:
            traceback.print_exc()
        user_error = find_user_error(exc)
        if user_error is not None:
            click.echo(f"error: {_one_line(str(user_error))}", err=True)
            return _exit(2, argv)
        click.echo(
            f"error: internal error ({type(exc).__name__}: {_one_line(str(exc))}); rerun with --verbose for the "
            "traceback and report it",
            err=True,
        )
        status = 1
    return _exit(status, argv)


def _exit(status: int, argv: list[str] | None) -> int:
    if argv is None:
        sys.exit(status)
    return status


if __name__ == "__main__":  # pragma: no cover
    main()
