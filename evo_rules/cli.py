"""The command line: the composition root (the only module that imports every layer)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from . import __version__, stopping
from .run_folder import RUNS, RunFolder, default_folder, sweep_folder


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


def config_path(name: str | None) -> str:
    """A config file, or a shipped config by name (`babi-2` or `babi-2.toml`: runs/ of a checkout,
    else the installed package `evo_rules.runs`), from any folder; None: the default."""
    from . import app

    if name is None:
        return app.default_config_path()
    if os.path.exists(name) or os.sep in name or (os.altsep and os.altsep in name):
        return name  # a path: the config loader names what is wrong with it
    file = name if name.endswith(".toml") else name + ".toml"
    here = os.path.join(app.RUNS_DIR, file)
    if os.path.isfile(here):
        return here
    shipped = _shipped_configs()
    if file in shipped:
        return shipped[file]
    local = os.listdir(app.RUNS_DIR) if os.path.isdir(app.RUNS_DIR) else []
    names = ", ".join(sorted({n[:-5] for n in [*shipped, *local] if n.endswith(".toml")}))
    raise CLIError(f"{name}: no such config file, and no shipped config of that name (shipped: {names})")


def _shipped_configs() -> dict[str, str]:
    from importlib import resources

    try:
        folder = resources.files("evo_rules.runs")
    except ModuleNotFoundError:  # a checkout that is not installed: runs/ is all there is
        return {}
    return {f.name: str(f) for f in folder.iterdir() if f.name.endswith(".toml")}


def _compile_note() -> None:
    """One line while numba compiles the kernels into its on-disk cache (first run only): a
    cold cache costs ~10-20 s before the first generation. Silent when it cannot tell."""
    try:
        from .kernels import run_program

        cold = not run_program._cache._cache_file._load_index()  # numba's index of cached builds
    except Exception:  # noqa: BLE001 - numba internals: no note rather than a wrong one
        return
    if cold:
        print("evo-rules: compiling kernels (first run only, ~10-20 s)...", file=sys.stderr)


def _cmd_run(args) -> int:
    from . import app
    from .config import load

    config = load(config_path(args.config))
    config = _with_flags(config, "run", args, ("seed", "generations", "population", "max_seconds",
                                               "max_evaluations"))
    config = _with_flags(config, "evaluation", args, ("backend", "workers"))
    out = args.out or os.fspath(default_folder(config.task.name, config.run.seed))
    from .validate import checked_task

    checked_task(config, app.task_handle(config).build)  # bad input: its one line comes alone
    print(f"evo-rules: run {config.task.name} from {config.source} into {out}", file=sys.stderr)
    _compile_note()
    stop = stopping.install()  # to the process's end: a late signal still gets its exit code
    try:
        search, report = app.start(config, out, progress=not args.quiet, rebuild_cache=args.rebuild_cache,
                                   stop=stop)
        return _finish(search, report)
    finally:
        stopping.exit_at_once()


def _with_flags(config, section: str, args, names):
    """`config` with the options `names` given on the command line set in `section`, checked one
    by one, so that a bad value is named as the option it came from (not as the config file's)."""
    from .config import ConfigError

    for name in names:
        value = getattr(args, name)
        if value is None:
            continue
        try:
            config = config.replace(section, **{name: value})
        except ConfigError as exc:
            raise ConfigError(f"{exc} (from the option --{name.replace('_', '-')} {value})") from None
    return config


def _nothing_to_resume(args) -> str | None:
    """The one line for a finished run whose report is written (None: there is work, or an error
    that app.resume reports)."""
    from . import app, checkpoint
    from .config import from_dict

    try:
        with open(RunFolder(args.dir).report, encoding="utf-8") as fh:
            report = json.load(fh)
        with warnings.catch_warnings():  # a fallback to the previous checkpoint: app.resume warns
            warnings.simplefilter("ignore")
            state = checkpoint.read_latest(args.dir)
            config = app._config_edits(args.dir, from_dict(state["config"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    total = config.run.generations if args.generations is None else args.generations
    done = state.get("generation", -1)
    if done < total or report.get("generation") != done or report.get("interrupted"):
        return None
    return (f"evo-rules: {args.dir}: nothing to resume: the run finished generation {done} of {total} "
            f"and its report is written (`evo-rules report {args.dir}`; --generations N > {max(total, done)} "
            "continues it)")


def _cmd_resume(args) -> int:
    from . import app
    from .config import from_dict

    # the options' values, checked before anything is read: a bad one is named as the option
    _with_flags(from_dict({}, source=args.dir), "run", args, ("generations", "max_seconds", "max_evaluations"))
    done = _nothing_to_resume(args)
    if done:
        print(done)
        return 0
    _compile_note()
    stop = stopping.install()
    try:
        search, report = app.resume(args.dir, args.generations, progress=not args.quiet,
                                    max_seconds=args.max_seconds, max_evaluations=args.max_evaluations,
                                    rebuild_cache=args.rebuild_cache, stop=stop)
        return _finish(search, report)
    finally:
        stopping.exit_at_once()


def _finish(search, report) -> int:
    from .report import format_report

    print(format_report(report))
    print(f"report: {search.folder.report}")
    if search.stop_reason.startswith("max_"):  # a budget: the run stopped as asked
        print(f"evo-rules: stopped by {search.stop_reason} after generation {search.generation}; "
              f"continue with `evo-rules resume {search.out}`", file=sys.stderr)
    elif search.stop.signum and search.generation < 0:  # nothing was checkpointed yet
        print(f"evo-rules: interrupted before generation 0 completed ({search.stop.name}); nothing to "
              f"resume: `evo-rules run` with the same --out {search.out} starts it again", file=sys.stderr)
        return search.stop.exit_code
    elif search.stop.signum:
        print(f"evo-rules: interrupted after generation {search.generation} ({search.stop.name}); "
              f"continue with `evo-rules resume {search.out}`", file=sys.stderr)
        return search.stop.exit_code  # 130 for SIGINT, 143 for SIGTERM
    return 0


def _cmd_report(args) -> int:
    from .report import format_report_of, read_report

    report = read_report(args.dir)
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_report_of(args.dir, report))
    return 0


def _cmd_sweep(args) -> int:
    from . import app
    from .config import load
    from .report import format_sweep

    config = load(config_path(args.config))
    if args.backend:
        config = config.replace("evaluation", backend=args.backend)
    _compile_note()
    out = args.out or os.fspath(sweep_folder(config.task.name))
    result = app.sweep(config, out, progress=not args.quiet, rebuild_cache=args.rebuild_cache)
    print(format_sweep(result))
    print(f"sweep: {RunFolder(out).sweep}")
    return 0


def _cmd_lineage(args) -> int:
    from .families import families, format_families, metric_name, write_families
    from .lineage_graph import export_graphml

    fams = families(args.dir)
    print(format_families(fams, top=args.top, metric=metric_name(args.dir)))
    if args.families_json:
        print(f"families: {write_families(args.dir, fams, args.families_json)}")
    if args.graphml:
        nodes, edges = export_graphml(args.dir, args.graphml)
        print(f"graphml: {args.graphml} ({nodes} rules, {edges} parent links)")
    return 0


def _cmd_plot(args) -> int:
    from .plots import plot_run

    for path in plot_run(args.dir, args.out, top=args.top):
        print(path)
    return 0


def _cmd_predict(args) -> int:
    from .fitted import format_scores, predict_csv

    text = format_scores(predict_csv(args.dir, args.data, args.rule))
    if not args.out:
        sys.stdout.write(text)
        return 0
    if os.path.isdir(args.out):
        raise CLIError(f"--out {args.out}: is a folder; give the scores file's name")
    tmp = args.out + ".tmp"  # written whole, then renamed: an existing file is never half-replaced
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    try:
        os.replace(tmp, args.out)
    except OSError:
        os.remove(tmp)  # no stray file left beside the one asked for
        raise
    print(f"evo-rules: {text.count(chr(10))} scores written to {args.out}", file=sys.stderr)
    return 0


def _cmd_tasks(args) -> int:
    from evo_rules.fitness.registry import TASKS

    for name, (_, description) in TASKS.items():
        print(f"{name:24s} {description}")
    return 0


def _cmd_lm_train(args) -> int:
    try:
        from evo_rules.fitness.lm.train import TrainSettings, train_lm
    except ImportError as exc:
        raise CLIError(f"the language model needs the lm extra (pip install 'evo-rules[lm]'): {exc}") from None
    settings = None
    given = {k: getattr(args, k) for k in ("max_steps", "seed", "patience", "windows") if getattr(args, k) is not None}
    shape = {k: getattr(args, k) for k in ("n_layer", "n_embd", "n_head", "context") if getattr(args, k) is not None}
    if shape:
        given["model"] = {**TrainSettings().model, **shape}
    if given:
        settings = TrainSettings(**{**TrainSettings().to_dict(), **given})
    res = train_lm(args.out, minutes=args.minutes, settings=settings, threads=args.threads,
                   progress=not args.quiet, log=lambda m: print(m, file=sys.stderr), device=args.device)
    if res["best_val"] is None:
        print(f"stopped ({res['stopped']}) at step {res['step']}, before the first evaluation; "
              f"run the same command again to continue in {args.out}")
    else:
        print(f"best validation loss {res['best_val']:.4f} at step {res['best_step']} "
              f"({res['stopped']}); model, tokenizer and curve.png in {args.out}")
    return 0


def _budget_options(p) -> None:
    p.add_argument("--max-seconds", type=float, help="stop cleanly (resumable) after the generation "
                   "that passes this many seconds ([run] max_seconds)")
    p.add_argument("--max-evaluations", type=int, help="stop cleanly (resumable) after the generation "
                   "that reaches this many fresh evaluations ([run] max_evaluations)")
    p.add_argument("--rebuild-cache", action="store_true", help="a damaged fitness cache: move it "
                   "aside and start an empty one")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evo-rules", description="Search scoring rules, not weights.")
    p.add_argument("--version", action="version", version=f"evo-rules {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("eval", help="print a rule's canonical form, key, parameters and gradients")
    e.add_argument("rule", help="rule as an s-expression, e.g. '(add (mul w x.a) w)'")
    e.add_argument("--show-gradients", action="store_true", help="also print d rule / d w for each weight")
    e.set_defaults(func=_cmd_eval)

    r = sub.add_parser("run", help="run a search (no CONFIG: the built-in default and-match search)")
    r.add_argument("config", nargs="?", help="TOML run config, or a shipped config by name "
                   "(e.g. babi-2: runs/babi-2.toml of the package)")
    r.add_argument("--out", help="run folder (default: runs/TASK-seedN-K, the first free K)")
    r.add_argument("--seed", type=int)
    r.add_argument("--generations", type=int)
    r.add_argument("--population", type=int)
    r.add_argument("--backend", choices=["serial", "process", "dask"])
    r.add_argument("--workers", type=int, help="evaluation workers (default: every core)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    _budget_options(r)
    r.set_defaults(func=_cmd_run)

    s = sub.add_parser("resume", help="continue a run from its last checkpoint")
    s.add_argument("dir")
    s.add_argument("--generations", type=int, help="new total number of generations")
    _budget_options(s)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_resume)

    p2 = sub.add_parser("report", help="print a run's hall of fame / Pareto front")
    p2.add_argument("dir")
    p2.add_argument("--json", action="store_true")
    p2.set_defaults(func=_cmd_report)

    g = sub.add_parser("lineage", help="a run's rule families; export its lineage graph")
    g.add_argument("dir")
    g.add_argument("--graphml", metavar="FILE", help="write the lineage graph (rules, parent links) as GraphML")
    g.add_argument("--families-json", metavar="FILE", help="write every family with its members as JSON")
    g.add_argument("--top", type=int, default=10, help="families to list (default 10)")
    g.set_defaults(func=_cmd_lineage)

    pl = sub.add_parser("plot", help="PNG plots of a run: families, best rule's ancestry, Pareto fronts, "
                        "logbook, Muller plot of families (and each seed's lead over Muon, for a run with a final "
                        "table of leads)")
    pl.add_argument("dir")
    pl.add_argument("--out", help="folder for the PNGs (default: DIR/plots)")
    pl.add_argument("--top", type=int, default=8, help="families to plot (default 8)")
    pl.set_defaults(func=_cmd_plot)

    w = sub.add_parser("sweep", help="enumerate every template rule up to a size, keep the best")
    w.add_argument("config", help="TOML run config (or a shipped one by name); its [sweep] section sets the sizes")
    w.add_argument("--out", help="folder for sweep.json and the cache (default: runs/TASK-sweep)")
    w.add_argument("--backend", choices=["serial", "process", "dask"])
    w.add_argument("--quiet", action="store_true")
    w.add_argument("--rebuild-cache", action="store_true", help="a damaged fitness cache: move it "
                   "aside and start an empty one")
    w.set_defaults(func=_cmd_sweep)

    lm = sub.add_parser("lm", help="the stage-3 language model (needs the lm extra)")
    lmsub = lm.add_subparsers(dest="lm_command", required=True)
    lt = lmsub.add_parser("train", help="train (or continue training) the small GPT on the TinyStories train stories")
    lt.add_argument("--out", default=os.path.join(RUNS, "lm"), help="training folder (default runs/lm); "
                    "a folder that holds a training run is continued")
    lt.add_argument("--minutes", type=float, default=15.0, help="time budget of this call (default 15)")
    lt.add_argument("--max-steps", type=int, help="optimizer steps in all (default 2600)")
    lt.add_argument("--seed", type=int)
    lt.add_argument("--patience", type=int, help="evaluations without a better validation loss before "
                    "stopping early (default 4)")
    lt.add_argument("--threads", type=int, default=0, help="torch threads (default: every core)")
    lt.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    lt.add_argument("--layers", dest="n_layer", type=int, help="a bigger model: layers (default 4)")
    lt.add_argument("--width", dest="n_embd", type=int, help="embedding width (default 128)")
    lt.add_argument("--heads", dest="n_head", type=int, help="attention heads (default 4)")
    lt.add_argument("--context", type=int, help="context in tokens (default 384)")
    lt.add_argument("--windows", choices=["story", "random"], help="where training rows start: at a "
                    "story's beginning (story, the default, as nanochat's BOS-aligned rows) or anywhere "
                    "in the packed text (random, as nanoGPT)")
    lt.add_argument("--quiet", action="store_true")
    lt.set_defaults(func=_cmd_lm_train)

    pr = sub.add_parser("predict", help="score each row of a CSV file with a run's winner (or --rule N)")
    pr.add_argument("dir", help="run folder")
    pr.add_argument("data", help="CSV file with a header line naming the rule's features")
    pr.add_argument("--rule", type=int, metavar="N", help="the N-th rule of the hall of fame (1 = best) "
                    "instead of the winner")
    pr.add_argument("--out", metavar="FILE", help="write the scores, one per line, to FILE (default: print)")
    pr.set_defaults(func=_cmd_predict)

    t = sub.add_parser("tasks", help="list the registered tasks")
    t.set_defaults(func=_cmd_tasks)
    return p


def _eval_argv(argv: list[str]) -> list[str]:
    """argparse takes a rule that starts with '-' (`eval -1e300`) for an option: put the eval
    command's options first and everything else after '--', so any text is the rule."""
    if not argv or argv[0] != "eval" or "--" in argv:
        return argv
    options = ("--show-gradients", "--help", "-h")
    is_option = lambda a: a in options or (len(a) > 2 and any(o.startswith(a) for o in options))  # noqa: E731
    return ["eval", *[a for a in argv[1:] if is_option(a)], "--", *[a for a in argv[1:] if not is_option(a)]]


def _unknown_command(parser, argv: list[str]) -> str | None:
    """One line for a mistyped command, with the nearest one ("did you mean")."""
    import difflib

    if not argv or argv[0].startswith("-"):
        return None
    commands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if argv[0] in commands:
        return None
    near = difflib.get_close_matches(argv[0], list(commands), n=1, cutoff=0.6)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    return f"evo-rules: error: unknown command '{argv[0]}'{hint} (commands: {', '.join(commands)})"


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    typo = _unknown_command(parser, argv)
    if typo:
        print(typo, file=sys.stderr)
        return 2
    args = parser.parse_args(_eval_argv(argv))
    try:
        with warnings.catch_warnings():  # restores the warning display when main returns
            warnings.showwarning = _warn_one_line
            return args.func(args)
    except KeyboardInterrupt as exc:  # a second signal (or Ctrl-C outside a run)
        print(f"evo-rules: {exc or 'interrupted'}", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)
    except (CLIError, ValueError, KeyError, OSError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"evo-rules: error: {_one_line(msg)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI's promise: one readable line
        signal_exc = stopping.interrupt_in(exc)  # a second signal that landed inside a kernel
        if signal_exc is not None:
            print(f"evo-rules: {signal_exc or 'interrupted'}", file=sys.stderr)
            return 128 + getattr(signal_exc, "signum", 2)
        if os.environ.get("EVO_RULES_DEBUG"):
            raise
        print(f"evo-rules: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(set EVO_RULES_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


def _warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"evo-rules: warning: {_one_line(message)}", file=sys.stderr)


def _one_line(msg) -> str:
    return " ".join(str(msg).split())


if __name__ == "__main__":
    sys.exit(main())
