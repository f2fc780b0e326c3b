"""Worker processes and unguarded scripts.

The process and local dask backends start workers with `spawn`: each worker imports the main
script again (as `__mp_main__`). A script that calls `run_search` at its top level, outside
`if __name__ == "__main__":`, would start the search again inside every worker. Found by
reading the script's own syntax tree around the calling line, before any folder is made.
A notebook, a REPL or `python -c` has no script file: workers never re-run it.
"""

from __future__ import annotations

import ast
import os
import sys


class UnguardedScript(RuntimeError):
    pass


def _is_main_test(test: ast.expr) -> bool:
    """`__name__ == "__main__"`, either way round."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return bool(names and consts)


def unguarded_call(depth: int = 2) -> str | None:
    """`file:line` of the main script's top-level line that led here, when that line is not
    under an `if __name__ == "__main__":` guard; None when it is, or there is no script."""
    frame = sys._getframe(depth)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") in ("__main__", "__mp_main__"):
            break
        frame = frame.f_back
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    if frame is None or not script or os.path.abspath(script) != os.path.abspath(frame.f_code.co_filename):
        return None  # no script: a notebook (whose cells may have file names), a REPL, -c
    path, line = frame.f_code.co_filename, frame.f_lineno
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None  # no readable script (stdin, -c, a notebook cell)
    for node in tree.body:
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.lineno <= line <= node.end_lineno:
            return None
    return f"{path}:{line}"


def check(backend: str, spawns: bool) -> None:
    """Refuse, with the fix, a process-starting backend called from an unguarded script (in a
    worker re-running such a script too: its call is just as unguarded)."""
    if not spawns:
        return
    where = unguarded_call(depth=3)
    if where is None:
        return
    raise UnguardedScript(
        f"{where}: the {backend} backend starts worker processes that import this script again, "
        "and each would start the search again; put the script's top-level code under "
        "`if __name__ == \"__main__\":` (or use the serial backend: "
        "{\"evaluation\": {\"backend\": \"serial\"}})")
