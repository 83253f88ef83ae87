"""One-line ``ValueError`` for damaged files: every reader reports truncated, empty, corrupt or
wrongly shaped input as ``"<file>: <what is wrong>"`` instead of the parser's own traceback."""
from __future__ import annotations

import functools
import os
import pickle
import struct
import tokenize
import zipfile
import zlib

__all__ = ["DAMAGE_ERRORS", "describe_damage", "reader"]

# What numpy / zipfile / pickle raise on damaged bytes (ValueError passes through untouched).
DAMAGE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, pickle.UnpicklingError, struct.error,
                 UnicodeDecodeError, KeyError, IndexError, TypeError, AttributeError, OverflowError,
                 MemoryError, ImportError, OSError, RecursionError, AssertionError, SyntaxError,
                 tokenize.TokenError)  # numpy parses a .npy header with ast/tokenize


def describe_damage(path, kind: str, err: BaseException) -> ValueError:
    """``ValueError("<path>: ... <kind> file is damaged (<error type>: <message>)")`` on one line."""
    size = os.path.getsize(path) if os.path.isfile(path) else -1
    what = "empty" if size == 0 else "truncated or corrupt"
    msg = " ".join(str(err).split())[:200]
    return ValueError(f"{os.fspath(path)}: {what} {kind} file ({type(err).__name__}: {msg})")


def reader(kind: str):
    """Decorator: the wrapped reader's first argument is the file; damage errors become one line."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(path, *args, **kwargs):
            try:
                return fn(path, *args, **kwargs)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
                raise
            except DAMAGE_ERRORS as e:
                raise describe_damage(path, kind, e) from None
            except ValueError as e:  # numpy's own messages (e.g. a truncated .npy) lack the file
                msg = " ".join(str(e).split())
                head = msg.split(": ", 1)[0].rsplit(":", 1)[0]
                if os.path.exists(head) or os.fspath(path) in msg:
                    if msg == str(e):
                        raise
                    raise ValueError(msg) from None
                raise ValueError(f"{os.fspath(path)}: {kind} file: {msg}") from None
        return inner
    return wrap
