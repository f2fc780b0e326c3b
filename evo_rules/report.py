"""The run report: Pareto front and hall of fame with test metrics, baselines, logbook.

Written as DIR/report.json and printed by `evo-rules report DIR`. Times aside, a report is a
pure function of the run's state, so a resumed run's report equals the uninterrupted one's.
"""

from __future__ import annotations

import json
import os

from .gate import rerun_gate

REPORT = "report.json"


def _entry(ind, test: dict) -> dict:
    return {
        "id": ind.id, "key": ind.key, "text": ind.text, "size": ind.size,
        "weights": ind.weights, "valid_metrics": ind.metrics, "metric": ind.metric,
        "test_metrics": test.get("metrics", {}), "test_valid": test.get("valid", False),
        "birth": ind.birth, "op": ind.op,
    }


def _order(inds):
    return sorted(inds, key=lambda i: (-i.metric, i.size, i.id))


def build_report(search) -> dict:
    task = search.task
    tests: dict[str, dict] = {}

    def test_of(text):
        r = tests.get(text)
        if r is None:
            r = tests[text] = search.test_evaluation(text)
        return r

    hof = [i for i in _order(search.manager.hof) if i.valid]
    front = sorted((i for i in search.manager.front if i.valid), key=lambda i: (i.size, -i.metric, i.id))
    report = {
        "run": os.path.basename(search.out),
        "task": {"name": task.name, "fingerprint": task.fingerprint, "metric": task.metric_name},
        "generation": search.generation,
        "interrupted": search.interrupted,
        "config": search.config.to_dict(),
        "best": _entry(hof[0], test_of(hof[0].text)) if hof else None,
        "hall_of_fame": [_entry(i, test_of(i.text)) for i in hof],
        "pareto_front": [_entry(i, test_of(i.text)) for i in front],
        "baselines": baselines(search, test_of),
        "rerun_gate": gate_for(search, [i.text for i in hof[: search.config.rerun.finalists]]),
        "winner": None,
        "logbook": [{k: v for k, v in row.items() if k != "seconds"} for row in search.logbook],
        "seconds": [row.get("seconds") for row in search.logbook],
    }
    # the winner: the best finalist that passed the rerun gate (all of them when no gate ran)
    passed = {g["text"] for g in report["rerun_gate"] if g["passed"]}
    for i in hof[: max(search.config.rerun.finalists, 1)]:
        if not report["rerun_gate"] or i.text in passed:
            report["winner"] = _entry(i, test_of(i.text))
            break
    if hasattr(task, "final_evaluation"):  # expensive tasks: the true metric on the test split
        report["final"] = final_for(search, report)
    return report


def final_for(search, report: dict) -> dict:
    """The task's own test-split scoring (stage 3: real LM forwards) of the winner, the other
    finalists that passed the gate, and the linear baseline."""
    rules = []
    win = report.get("winner")
    if win:
        rules.append({"name": "searched rule (winner)", "text": win["text"], "weights": win["weights"]})
    passed = [g["text"] for g in report["rerun_gate"] if g["passed"]]
    for n, e in enumerate(report["hall_of_fame"][: search.config.rerun.finalists]):
        if e["text"] in passed and (not win or e["text"] != win["text"]):
            rules.append({"name": f"finalist {n + 1}", "text": e["text"], "weights": e["weights"]})
    lin = report["baselines"].get("linear")
    if lin:
        rules.append({"name": "linear rule", "text": lin["text"], "weights": lin["weights"]})
    from .rule import parse

    for r in rules:
        r["infix"] = parse(r["text"]).to_infix(r["weights"])
    out = search.task.final_evaluation(rules, progress=search.progress)
    out["rules"] = rules
    out["search_seconds"] = round(sum(r.get("seconds") or 0.0 for r in search.logbook), 1)
    out["precompute_seconds"] = getattr(search.task, "meta", {}).get("seconds")
    return out


def gate_for(search, texts: list[str]) -> list[dict]:
    task = search.task
    linear = task.linear_rule_text() if hasattr(task, "linear_rule_text") else None
    return rerun_gate(texts, task, search.config.fit_settings, linear, search.config.rerun.seeds)


def reference_texts(task) -> list[str]:
    """The task's hand-written reference rules (a list, or a mapping name -> text), if any."""
    refs = task.reference_rules() if hasattr(task, "reference_rules") else []
    return list(refs.values()) if isinstance(refs, dict) else list(refs)


def baselines(search, test_of) -> dict:
    task = search.task
    out = {}
    if hasattr(task, "linear_rule_text"):
        text = task.linear_rule_text()
        r = test_of(text)
        out["linear"] = {"text": r["text"], "test_metrics": r["metrics"], "weights": r["weights"]}
    if hasattr(task, "reference_rules"):
        refs = []
        for text in reference_texts(task):
            r = test_of(text)
            refs.append({"text": r["text"], "test_metrics": r["metrics"]})
        out["reference"] = refs
    if hasattr(task, "oracle"):
        out["oracle"] = {"test_metrics": {task.metric_name: float(task.oracle("test"))}}
    return out


def write_json(path: str, data: dict) -> str:
    """Write JSON atomically: a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def write_report(folder: str, report: dict) -> str:
    return write_json(os.path.join(folder, REPORT), report)


def read_report(folder: str) -> dict:
    path = os.path.join(folder, REPORT)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{folder}: no report.json (has the run finished a generation?)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None


def format_report(report: dict) -> str:
    metric = report["task"]["metric"]
    lines = [f"run {report['run']}: task {report['task']['name']}, generation {report['generation']}"
             + (" (interrupted)" if report.get("interrupted") else "")]
    b = report.get("baselines", {})
    if "linear" in b:
        lines.append(f"  linear baseline  test {metric} = {b['linear']['test_metrics'].get(metric, float('nan')):.4f}")
    if "oracle" in b:
        lines.append(f"  oracle           test {metric} = {b['oracle']['test_metrics'][metric]:.4f}")
    for r in b.get("reference", []):
        lines.append(f"  reference        test {metric} = {r['test_metrics'].get(metric, float('nan')):.4f}  {r['text']}")
    for title, items in (("hall of fame", report["hall_of_fame"]), ("Pareto front (size vs metric)", report["pareto_front"])):
        lines.append(f"{title}:")
        lines.append(f"  {'valid':>7} {'test':>7} {'size':>4}  key       rule / weights")
        for e in items:
            t = e["test_metrics"].get(metric, float("nan"))
            w = ", ".join(f"{v:.4g}" for v in e["weights"])
            lines.append(f"  {e['metric']:7.4f} {t:7.4f} {e['size']:4d}  {e['key'][:8]}  {e['text']}")
            lines.append(f"  {'':7} {'':7} {'':4}  {'':8}  weights [{w}]")
    win = report.get("winner")
    if win:
        lines.append(f"winner (best finalist through the rerun gate): test {metric} = "
                     f"{win['test_metrics'].get(metric, float('nan')):.4f}, size {win['size']}: {win['text']}")
    elif report.get("rerun_gate"):
        lines.append("winner: none (no finalist passed the rerun gate)")
    final = report.get("final")
    if final:
        lines.append(final["text"])
        for r in final.get("rules", []):
            lines.append(f"  {r['name']}: {r.get('infix', r['text'])}")
            lines.append(f"  {'':{len(r['name'])}}  {r['text']}")
        lines.append(f"  time: LM precompute {final.get('precompute_seconds')} s (once, then cached), "
                     f"search {final.get('search_seconds')} s, real-LM scoring {final.get('seconds')} s")
    gate = report.get("rerun_gate")
    if gate:
        lines.append("rerun gate (re-fitted on fresh seeds; passes if it beats the linear baseline every time):")
        for g in gate:
            lines.append(f"  {'PASS' if g['passed'] else 'FAIL'}  {g['text']}  " + ", ".join(f"{v:.4f}" for v in g["metrics"]))
    return "\n".join(lines)


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
