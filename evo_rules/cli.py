"""The command line: the composition root (the only module that imports every layer)."""

from __future__ import annotations

import argparse
import sys

from . import __version__


class CLIError(Exception):
    """An error the CLI reports as one line and a non-zero exit."""


def _cmd_eval(args) -> int:
    from .rule import parse

    rule = parse(args.rule)
    print(f"rule:       {rule.text}")
    print(f"key:        {rule.key}")
    print(f"size:       {rule.size}")
    print(f"parameters: {', '.join(rule.params) or '(none)'}")
    print(f"features:   {', '.join(rule.features) or '(none)'}")
    if args.show_gradients:
        for p, g in rule.gradients.items():
            print(f"d/d{p}:      {g.text}")
        print(f"program:    {len(rule.program)} instructions (forward + gradients, shared subterms once)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evo-rules", description="Search scoring rules, not weights.")
    p.add_argument("--version", action="version", version=f"evo-rules {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("eval", help="print a rule's canonical form, key, parameters and gradients")
    e.add_argument("rule", help="rule as an s-expression, e.g. '(add (mul w x.a) w)'")
    e.add_argument("--show-gradients", action="store_true", help="also print d rule / d w for each weight")
    e.set_defaults(func=_cmd_eval)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("evo-rules: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, KeyError, OSError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"evo-rules: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
