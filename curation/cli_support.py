"""What every ``curation`` command module shares: one error line, JSON or text output.

A domain error becomes ``error: <message>`` on stderr and exit status 2;
``--json`` prints a machine-readable result on stdout. Kept apart from
``curation.cli`` so command modules (classes, bench, and the datasets layer's
commands) use the same helpers without importing the module that registers them.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import click

from curation.exceptions import CurationError

P = ParamSpec("P")
R = TypeVar("R")

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def domain_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a domain error raised by the command into one clear line and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CurationError as error:
            fail(str(error))
            raise AssertionError("unreachable") from None

    return wrapper


def emit(as_json: bool, payload: Any, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        human()
