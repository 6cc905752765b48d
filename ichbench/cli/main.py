"""The `ichbench` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ichbench import __version__
from ichbench.cli import data
from ichbench.cli import icm
from ichbench.cli import leaderboard
from ichbench.cli import plugin
from ichbench.cli import train
from ichbench.cli.common import STATE
from ichbench.errors import IchbenchError

app = typer.Typer(
    help="ichbench: benchmark label-efficient ICH segmentation methods (Spahr et al. 2023) "
         "on Seg-CQ500 and Hssayeni, with plugins, Ray and MLflow.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.add_typer(data.app, name="data")
app.add_typer(icm.app, name="icm")
app.add_typer(leaderboard.app, name="leaderboard")
app.add_typer(plugin.app, name="plugin")
app.command("methods")(train.methods)
app.command("pretrain")(train.pretrain)
app.command("finetune")(train.finetune)
from ichbench.cli import run as run_cli  # noqa: E402
app.command("run")(run_cli.run)
app.command("runs")(run_cli.runs)
app.command("ui")(run_cli.ui)
app.command("tune")(run_cli.tune)
from ichbench.cli import predict as predict_cli  # noqa: E402
app.command("predict")(predict_cli.predict)
from ichbench.cli import score as score_cli  # noqa: E402
app.command("score")(score_cli.score)


def _version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def root(home: Optional[Path] = typer.Option(None, "--home", envvar="ICHBENCH_HOME",
                                              help="Workspace for stores, caches and tracking (default ~/.ichbench)."),
         store_root: Optional[str] = typer.Option(
             None, "--store-root", envvar="ICHBENCH_STORE_ROOT",
             help="Where the slice stores live: a folder, file:///FOLDER or s3://BUCKET/PREFIX "
                  "(default $ICHBENCH_HOME/stores; S3 endpoint and keys from the AWS_* environment)."),
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    STATE["home"] = home
    STATE["store_root"] = store_root


@app.command()
def datasets(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the datasets: role, source, licence and expected layout."""
    from ichbench.plugins import get_registry
    reg = get_registry()
    rows = []
    for name, ds in sorted(reg.datasets().items()):
        rows.append({**ds.describe(), "plugin": reg.owner("datasets", name).name})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    console = Console()
    for r in rows:
        console.rule(f"[bold]{r['name']}[/bold]", align="left")
        console.print(r["description"], highlight=False)
        console.print(f"[bold]roles[/bold]    {', '.join(r['roles'])}   [bold]plugin[/bold] {r['plugin']}",
                      highlight=False)
        console.print(f"[bold]source[/bold]   {r['source_url']}", highlight=False)
        console.print(f"[bold]licence[/bold]  {r['licence']}", highlight=False)
        if r.get("class_names"):
            ids = ", ".join(f"{k} {name}" for k, name in enumerate(r["class_names"], start=1))
            console.print(f"[bold]classes[/bold]  per-voxel class ids in the store: 0 none, {ids}", highlight=False)
        console.print("[bold]layout[/bold]")
        # preformatted (aligned columns): printed as is, never re-wrapped
        print("\n".join("  " + line for line in r["layout"].splitlines()))
        print()


@app.command()
def plugins() -> None:
    """Print the loaded plugins as JSON: name, distribution, version, hooks."""
    from ichbench.plugins import get_registry
    reg = get_registry()
    print(json.dumps([p.as_json() for p in sorted(reg.plugins.values(), key=lambda p: p.name)], indent=2))


@app.command("config-schema")
def config_schema() -> None:
    """Print the JSON Schema of a run config (docs/config.schema.json).

    The settings `--set` changes, with their types, ranges and defaults."""
    from ichbench.config import json_schema
    print(json.dumps(json_schema(), indent=2))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main() -> None:
    """Every error is one line, `ichbench: error: ...`, and a non-zero exit: ours (IchbenchError),
    the command line's (click's usage errors, which typer would draw as a box) and the machine's
    (OSError)."""
    # click's exception classes as typer raises them (recent typer vendors its own click)
    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        code = app(standalone_mode=False)
    except click_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":   # `ichbench data`: the help, as before
            if exc.format_message().strip():   # (typer has printed it already)
                exc.show()
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"ichbench: error: {_one_line(exc.format_message())}{hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:   # end of input at a prompt
        print("ichbench: aborted", file=sys.stderr)
        sys.exit(1)
    except IchbenchError as exc:
        print(f"ichbench: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        # the machine said no (permissions, a full disk, a file where a folder should be): the
        # same one line, naming the file, instead of a traceback through the library that tried
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ichbench: error: {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)   # typer.Exit(n) returns n here


if __name__ == "__main__":
    main()
