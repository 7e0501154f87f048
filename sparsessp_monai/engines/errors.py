"""
Bad input answered with one line.

Checks of user input (a file, a folder, a config value) raise :class:`BundleInputError` with a message that names
the file or setting and the problem. MONAI's bundle runner wraps such an error in several layers
(``Failed to evaluate ConfigExpression``, engine re-raises), so a user would see 100+ lines of traceback ending far
from the reason. :func:`report_input_errors_briefly`, called first in a config's ``initialize``, installs a
``sys.excepthook`` that prints ``error: <message>`` for an uncaught exception whose chain holds a
:class:`BundleInputError`, and leaves every other exception (a bug) to the normal traceback. The process still
exits non-zero. ``--debug true`` (or ``SPARSESSP_DEBUG=1``) keeps full tracebacks.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

from sparsessp_monai.engines.bundle_utils import as_bool

__all__ = ["BundleInputError", "InputFileNotFoundError", "find_input_error", "report_input_errors_briefly"]


class BundleInputError(ValueError):
    """A problem with what the user gave (a file, a folder, a config value); the message names it and says what is
    wrong. A ``ValueError``, so callers that catch ``ValueError`` keep working."""


class InputFileNotFoundError(BundleInputError, FileNotFoundError):
    """An input file (image, label, datalist) that does not exist; also a ``FileNotFoundError`` for callers that
    catch that."""


def find_input_error(exc: BaseException | None) -> BundleInputError | None:
    """The first :class:`BundleInputError` in ``exc``'s chain of causes and contexts, or ``None``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BundleInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ if exc.__cause__ is not None else exc.__context__
    return None


def report_input_errors_briefly(debug: bool | str = False) -> bool:
    """Install the one-line report for input errors (see the module docstring); returns whether it is active.

    Idempotent; with ``debug`` true (or the environment variable ``SPARSESSP_DEBUG`` set to a true value) nothing is
    installed and tracebacks stay complete.
    """
    if as_bool(debug) or as_bool(os.environ.get("SPARSESSP_DEBUG", "")):
        return False
    if getattr(sys.excepthook, "_sparsessp_brief", False):
        return True
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        error = find_input_error(value)
        if error is None:
            previous(kind, value, tb)
            return
        print(f"error: {error}", file=sys.stderr)

    hook._sparsessp_brief = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    return True
