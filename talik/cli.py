"""The `talik` command."""

import typer

app = typer.Typer()


def main() -> None:
    """Entry point."""
    app()
