"""The run report: Pareto front and hall of fame with test metrics, baselines, logbook.

Written as DIR/report.json and printed by `evo-rules report DIR`. Times aside, a report is a
pure function of the run's state, so a resumed run's report equals the uninterrupted one's.

The printed report opens with a summary (`summary` in report.json): the winner in infix beside
its s-expression, its test metric against the linear, oracle and reference baselines (the share
of the linear-to-oracle gap it closes), evaluations and cache hit rate; the wall time comes from
the logbook's `seconds` (kept out of `summary` so that the rest stays time-free).

The winner is the first finalist that passes the rerun gate, the finalists taken in parsimony
order (evo_rules.gate): the smallest rules whose validation metric is within one standard error
of the best rule's first. `best` stays the rule with the best validation metric.

Test and validation metrics come from `evaluate.StoredFits`: a rule the run's fitness cache holds
(every rule the search evaluated, under the run's fit settings) is scored with its stored weights;
only the others (a baseline the search never met, the pruned winner) are fitted again.
"""

from __future__ import annotations

import json
import os

from . import run_folder
from .evaluate import Evaluation, StoredFits, is_blackbox, task_has
from .gate import distinct_finalists, parsimony_order, rerun_gate
from .prune import prune
from .run_folder import RunFolder

REPORT = run_folder.REPORT  # kept for callers that import the name from here
EML_NOTE = "eml(u, v) = exp(u) - ln(v)  (softplus(z) = ln(1 + exp(z)))"


def _infix(text: str, weights) -> str:
    from .rule import parse

    try:
        return parse(text, check_constants=False).to_infix(weights)
    except (ValueError, KeyError):
        return text


def _entry(ind, test: Evaluation) -> dict:
    return {
        "id": ind.id, "key": ind.key, "text": ind.text, "size": ind.size,
        "infix": _infix(ind.text, ind.weights),
        "weights": ind.weights, "valid_metrics": ind.metrics, "metric": ind.metric,
        "test_metrics": dict(test.metrics), "test_valid": test.valid,
        "birth": ind.birth, "op": ind.op,
    }


def _order(inds):
    return sorted(inds, key=lambda i: (-i.metric, i.size, i.id))


def stored_fits(search) -> StoredFits:
    """The run's evaluations, read from its fitness cache (keyed by the run's fit settings)."""
    return StoredFits(search.task, search.config.fit_settings, search.cache.get_many)


def build_report(search, fits: StoredFits | None = None) -> dict:
    """`fits`: where rules' evaluations come from (default: `stored_fits(search)`; a StoredFits
    without a lookup fits every rule again)."""
    task = search.task
    fits = stored_fits(search) if fits is None else fits

    def test_of(text) -> Evaluation:
        return fits.evaluation(text, "test")

    hof = [i for i in _order(search.manager.hof) if i.valid]
    front = sorted((i for i in search.manager.front if i.valid), key=lambda i: (i.size, -i.metric, i.id))
    # candidates: the hall of fame and the smaller rules of the Pareto front, in parsimony order
    # (within one standard error of the best, smallest first); distinct functions only
    pool = _order({i.key: i for i in [*front, *hof]}.values())
    order, n_near = parsimony_order([(i.text, i.weights, i.size, i.metric) for i in pool], task)
    ranked = [pool[k] for k in order]
    finalists = [ranked[k] for k in distinct_finalists([(i.text, i.weights, i.size) for i in ranked], task,
                                                       max(search.config.rerun.finalists, 1))]
    gated = finalists[: search.config.rerun.finalists]
    if gated and pool[0].text not in {i.text for i in gated}:
        # the best rule is always a finalist too (last): when no smaller rule within noise
        # passes the gate, it still can
        gated.append(pool[0])
    report = {
        "run": os.path.basename(search.out),
        "task": {"name": task.name, "fingerprint": task.fingerprint, "metric": task.metric_name},
        "generation": search.generation,
        "interrupted": search.interrupted,
        "config": search.config.to_dict(),
        "best": _entry(hof[0], test_of(hof[0].text)) if hof else None,
        "hall_of_fame": [_entry(i, test_of(i.text)) for i in hof],
        "pareto_front": [_entry(i, test_of(i.text)) for i in front],
        "baselines": baselines(search, fits),
        "rerun_gate": gate_for(search, [i.text for i in gated]),
        "finalists": [i.id for i in gated],
        # rules within one standard error of the best validation metric (the winner's candidates first)
        "within_one_se": [_entry(i, test_of(i.text)) for i in ranked[:n_near]],
        "winner": None,
        "logbook": [{k: v for k, v in row.items() if k != "seconds"} for row in search.logbook],
        "seconds": [row.get("seconds") for row in search.logbook],
    }
    # the winner: the first finalist (parsimony order) that passed the rerun gate (any when no gate ran)
    passed = {g["text"] for g in report["rerun_gate"] if g["passed"]}
    for i in gated or finalists:
        if not report["rerun_gate"] or i.text in passed:
            report["winner"] = _entry(i, test_of(i.text))
            break
    if report["winner"] and not is_blackbox(task):  # pruning re-fits on rows
        report["winner"]["pruned"] = pruned_entry(search, report["winner"]["text"], test_of)
    report["summary"] = summary(report)
    if task_has(task, "final_evaluation"):  # expensive tasks: the true metric on the test split
        report["final"] = final_for(search, report)
    return report


def pruned_entry(search, text: str, test_of) -> dict | None:
    """The winner with the terms its fit does not need dropped (evo_rules.prune), with its own
    test metrics; None when nothing could be dropped."""
    res = prune(text, search.task, search.config.fit_settings)
    if not res["dropped"]:
        return None
    test = test_of(res["text"])
    return {"text": res["text"], "size": res["size"], "weights": res["weights"],
            "infix": _infix(res["text"], res["weights"]), "dropped": res["dropped"],
            "fit_loss": res["fit_loss"], "full_fit_loss": res["full_fit_loss"],
            "test_metrics": dict(test.metrics), "test_valid": test.valid}


def _test_metric(entry: dict | None, metric: str) -> float | None:
    v = (entry or {}).get("test_metrics", {}).get(metric)
    return None if v is None else float(v)


def gap_closed(value: float | None, linear: float | None, oracle: float | None) -> float | None:
    """(value - linear) / (oracle - linear): 0 = no better than linear, 1 = as good as the oracle."""
    if value is None or linear is None or oracle is None or oracle == linear:
        return None
    return (value - linear) / (oracle - linear)


def summary(report: dict) -> dict:
    """The report's opening lines as data: the winner (else the best rule, `winner` false) with
    its test metric against the baselines, the evaluations and the cache hit rate."""
    metric = report["task"]["metric"]
    b = report.get("baselines", {})
    rule = report.get("winner") or report.get("best")
    value = _test_metric(rule, metric)
    linear = _test_metric(b.get("linear"), metric)
    oracle = _test_metric(b.get("oracle"), metric)
    evals = sum(int(r.get("evals") or 0) for r in report.get("logbook", []))
    hits = sum(int(r.get("cache_hits") or 0) for r in report.get("logbook", []))
    return {
        "rule": None if rule is None else {
            "id": rule.get("id"), "text": rule["text"], "size": rule["size"], "weights": rule["weights"],
            "infix": rule.get("infix") or _infix(rule["text"], rule["weights"])},
        "winner": report.get("winner") is not None,
        "test_metric": value,
        "linear": linear,
        "oracle": oracle,
        "reference": [_test_metric(r, metric) for r in b.get("reference", [])],
        "gap_closed": gap_closed(value, linear, oracle),
        "evaluations": evals,
        "cache_hits": hits,
        "cache_hit_rate": hits / (evals + hits) if evals + hits else None,
    }


def final_for(search, report: dict) -> dict:
    """The task's own test-split scoring (stage 3: real LM forwards) of the winner, the other
    finalists that passed the gate, and the linear baseline."""
    rules = []
    win = report.get("winner")
    if win:
        rules.append({"name": "searched rule (winner)", "text": win["text"], "weights": win["weights"]})
        if win.get("pruned"):
            rules.append({"name": "searched rule, pruned", "text": win["pruned"]["text"],
                          "weights": win["pruned"]["weights"]})
    passed = [g["text"] for g in report["rerun_gate"] if g["passed"]]
    chosen = set(report.get("finalists", []))
    for n, e in enumerate(e for e in report["hall_of_fame"] if e["id"] in chosen):
        if e["text"] in passed and (not win or e["text"] != win["text"]):
            rules.append({"name": f"finalist {n + 1}", "text": e["text"], "weights": e["weights"]})
    lin = report["baselines"].get("linear")
    if lin:
        rules.append({"name": "linear rule", "text": lin["text"], "weights": lin["weights"]})
    from .rule import parse

    for r in rules:
        r["infix"] = parse(r["text"], check_constants=False).to_infix(r["weights"])
    out = search.task.final_evaluation(rules, progress=search.progress)
    out["rules"] = rules
    out["search_seconds"] = round(sum(r.get("seconds") or 0.0 for r in search.logbook), 1)
    out["precompute_seconds"] = search.task.meta.get("seconds") if task_has(search.task, "meta") else None
    return out


def gate_for(search, texts: list[str]) -> list[dict]:
    task = search.task
    linear = task.linear_rule_text() if task_has(task, "linear_rule_text") else None
    return rerun_gate(texts, task, search.config.fit_settings, linear, search.config.rerun.seeds,
                      margin=search.config.rerun.margin)


def reference_texts(task) -> list[str]:
    """The task's hand-written reference rules (a list, or a mapping name -> text), if any."""
    refs = task.reference_rules() if task_has(task, "reference_rules") else []
    return list(refs.values()) if isinstance(refs, dict) else list(refs)


def baselines(search, fits: StoredFits) -> dict:
    """Test metrics of the linear rule, the references and the oracle, and (for plots next to the
    search's validation metrics) their validation metrics and the rules' sizes."""
    task = search.task

    def valid_of(text) -> dict:
        return dict(fits.evaluation(text, "valid").metrics)

    out = {}
    if task_has(task, "linear_rule_text"):
        text = task.linear_rule_text()
        r = fits.evaluation(text, "test")
        out["linear"] = {"text": r.text, "test_metrics": dict(r.metrics), "weights": list(r.weights),
                         "size": r.size, "valid_metrics": valid_of(text),
                         "name": task.baseline_name if task_has(task, "baseline_name") else "linear rule"}
    if task_has(task, "reference_rules"):
        refs = []
        for text in reference_texts(task):
            r = fits.evaluation(text, "test")
            refs.append({"text": r.text, "test_metrics": dict(r.metrics), "size": r.size,
                         "valid_metrics": valid_of(text)})
        out["reference"] = refs
    if task_has(task, "oracle"):
        out["oracle"] = {"test_metrics": {task.metric_name: float(task.oracle("test"))}}
        try:
            out["oracle"]["valid_metrics"] = {task.metric_name: float(task.oracle("valid"))}
        except (KeyError, ValueError):  # a task whose oracle knows the test split only
            pass
    return out


def write_json(path: str, data: dict) -> str:
    """Write JSON atomically: a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def write_report(folder: str, report: dict) -> str:
    return write_json(os.fspath(RunFolder(folder).report), report)


def read_report(folder: str) -> dict:
    path = os.fspath(RunFolder(folder).report)
    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{folder}: no report.json (has the run finished a generation?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(report, dict):
        raise ValueError(f"{path}: not a run report (a JSON {type(report).__name__}, not an object)")
    return report


def format_report_of(folder: str, report: dict) -> str:
    """`format_report` of a report read from `folder`: a report that lacks a part or holds a
    value of another type (a damaged or hand-edited file) is one error naming the file."""
    try:
        return format_report(report)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{os.fspath(RunFolder(folder).report)}: not a readable run report "
                         f"({type(exc).__name__}: {exc})") from None


def _f(v) -> str:
    return "  -   " if v is None else f"{v:.4f}"


def _uses_eml(report: dict) -> bool:
    entries = [report.get("winner") or {}, *report.get("hall_of_fame", []), *report.get("pareto_front", [])]
    return any("(eml " in (e.get("text") or "") for e in entries)


def format_summary(report: dict) -> list[str]:
    """The report's opening lines (see `summary`); works on reports written before it existed."""
    metric = report["task"]["metric"]
    sm = summary(report)
    lines = ["summary:"]
    rule = sm["rule"]
    if rule is None:
        lines.append("  no valid rule")
    else:
        what = "winner" if sm["winner"] else "best (no finalist passed the rerun gate)"
        lines.append(f"  {what}: {rule.get('infix') or _infix(rule['text'], rule['weights'])}")
        lines.append(f"  {'':{len(what)}}  {rule['text']}  (size {rule['size']})")
    vs = [f"test {metric} {_f(sm['test_metric'])}", f"{_baseline_name(report)} {_f(sm['linear'])}"]
    if sm["oracle"] is not None:
        vs.append(f"oracle {_f(sm['oracle'])}")
    if sm["reference"]:
        vs.append(f"reference{'s' if len(sm['reference']) > 1 else ''} " + " ".join(_f(r) for r in sm["reference"]))
    if sm["gap_closed"] is not None:
        vs.append(f"gap closed {100 * sm['gap_closed']:.1f}% of {_baseline_name(report)} -> oracle")
    lines.append("  " + ", ".join(vs))
    secs = [t for t in report.get("seconds", []) if t is not None]
    rate = "-" if sm["cache_hit_rate"] is None else f"{100 * sm['cache_hit_rate']:.1f}%"
    lines.append(f"  {sm['evaluations']} evaluations, cache hit rate {rate} ({sm['cache_hits']} hits), "
                 f"wall time {sum(secs):.1f} s over {len(secs)} generations")
    if _uses_eml(report):
        lines.append(f"  {EML_NOTE}")
    return lines


def format_report(report: dict) -> str:
    metric = report["task"]["metric"]
    lines = [f"run {report['run']}: task {report['task']['name']}, generation {report['generation']}"
             + (" (interrupted)" if report.get("interrupted") else "")]
    lines += format_summary(report)
    b = report.get("baselines", {})
    if b:
        lines.append("baselines:")
    if "linear" in b:
        lines.append(f"  {_baseline_name(report) + ' baseline':16} test {metric} = "
                     f"{b['linear']['test_metrics'].get(metric, float('nan')):.4f}")
    if "oracle" in b:
        lines.append(f"  oracle           test {metric} = {b['oracle']['test_metrics'][metric]:.4f}")
    for r in b.get("reference", []):
        lines.append(f"  reference        test {metric} = {r['test_metrics'].get(metric, float('nan')):.4f}  {r['text']}")
    for title, items in (("hall of fame", report["hall_of_fame"]), ("Pareto front (size vs metric)", report["pareto_front"])):
        lines.append(f"{title}:")
        lines.append(f"  {'valid':>7} {'test':>7} {'size':>4}  key       rule / infix with fitted weights")
        for e in items:
            t = e["test_metrics"].get(metric, float("nan"))
            lines.append(f"  {e['metric']:7.4f} {t:7.4f} {e['size']:4d}  {e['key'][:8]}  {e['text']}")
            lines.append(f"  {'':7} {'':7} {'':4}  {'':8}  = {e.get('infix') or _infix(e['text'], e['weights'])}")
    win = report.get("winner")
    if win:
        lines.append(f"winner (first finalist through the rerun gate; finalists: the smallest within one "
                     f"standard error of the best validation {metric} first, the best last): test {metric} = "
                     f"{win['test_metrics'].get(metric, float('nan')):.4f}, size {win['size']}: {win['text']}")
        p = win.get("pruned")
        if p:
            rise = "-" if not p.get("full_fit_loss") else f"{100 * (p['fit_loss'] / p['full_fit_loss'] - 1):+.2f}%"
            lines.append(f"  pruned (terms its fit does not need dropped, training loss {rise}): test {metric} = "
                         f"{p['test_metrics'].get(metric, float('nan')):.4f}, size {p['size']}: {p['text']}")
            lines.append(f"  {'':6}= {p['infix']}")
    elif report.get("rerun_gate"):
        lines.append("winner: none (no finalist passed the rerun gate)")
    final = report.get("final")
    if final:
        lines.append(final["text"])
        shown = {row["name"] for h in final.get("horizons", []) for row in h["rows"]}
        for r in final.get("rules", []):
            if shown and r["name"] not in shown:  # left out of the table (the optimizer's rule 0 is Muon)
                continue
            lines.append(f"  {r['name']}: {r.get('infix', r['text'])}")
            lines.append(f"  {'':{len(r['name'])}}  {r['text']}")
        pre = final.get("precompute_seconds")
        lines.append("  time: " + ("" if pre is None else f"LM precompute {pre} s (once, then cached), ")
                     + f"search {final.get('search_seconds')} s, final scoring {final.get('seconds')} s")
    gate = report.get("rerun_gate")
    if gate:
        lin = b.get("linear", {}).get("text")
        name = _baseline_name(report)
        by = f" by more than {gate[0]['margin']:g}" if gate[0].get("margin") else ""
        lines.append("rerun gate (finalists rerun on fresh seeds; a finalist passes if it beats the "
                     f"{name} baseline{by} in every rerun; validation {gate[0].get('metric', metric)}):")
        if lin:
            lines.append(f"  baseline: {_baseline_name(report, short=False)} {lin}")
        for g in gate:
            labels = g.get("reruns")
            if labels:  # named reruns (e.g. seed and horizon): one line each, so a reader sees which failed
                lines.append(f"  {'PASS' if g['passed'] else 'FAIL'}  {g['text']}")
                for how, m, l in zip(labels, g["metrics"], g["linear"]):
                    lost = "" if m > l + g.get("margin", 0.0) else ("  (lost)" if m <= l else "  (within the margin)")
                    lines.append(f"        {how}: {m:.4f} vs {l:.4f}{lost}")
            else:
                vs = ", ".join(f"{m:.4f} vs {l:.4f}" for m, l in zip(g["metrics"], g["linear"]))
                lines.append(f"  {'PASS' if g['passed'] else 'FAIL'}  {g['text']}  {vs}")
    return "\n".join(lines)


def _baseline_name(report: dict, short: bool = True) -> str:
    """What the task calls its linear baseline: "linear" ("linear rule" with `short` False) unless
    the task names it (the optimizer track's is Muon; reports from before the name was kept have
    none)."""
    name = report.get("baselines", {}).get("linear", {}).get("name", "linear rule")
    return "linear" if short and name == "linear rule" else name


def format_sweep(result: dict) -> str:
    metric = result["task"]["metric"]
    lines = [f"sweep of task {result['task']['name']} ({result['seconds']:.1f} s)"]
    for r in result["rounds"]:
        lines.append(f"  round {r['round']}: {r['enumerated']} enumerated, {r['duplicates']} duplicates by key, "
                     f"{r['unique']} unique, {r['cache_hits']} cache hits, {r['evaluated']} evaluated, "
                     f"{r['invalid']} invalid, {r['seconds']:.1f} s")
    if result.get("linear"):
        lines.append(f"  linear baseline  test {metric} = {result['linear'].get(metric, float('nan')):.4f}")
    if result.get("oracle") is not None:
        lines.append(f"  oracle           test {metric} = {result['oracle']:.4f}")
    lines.append(f"  {'valid':>7} {'test':>7} {'size':>4}  rule")
    for f in result["best"]:
        lines.append(f"  {f['metric']:7.4f} {f['test_metrics'].get(metric, float('nan')):7.4f} {f['size']:4d}  {f['text']}")
    for g in result.get("rerun_gate", []):
        lines.append(f"  gate {'PASS' if g['passed'] else 'FAIL'}  {g['text']}  "
                     + ", ".join(f"{m:.4f} vs linear {l:.4f}" for m, l in zip(g["metrics"], g["linear"])))
    return "\n".join(lines)
