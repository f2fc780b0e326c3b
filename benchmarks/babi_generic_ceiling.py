"""What bAbI task 3's generic features allow: the linear rule plus hand-written interactions.

    python3 benchmarks/babi_generic_ceiling.py            # about a minute

Issue 10 asks for a searched rule on the generic features with test exact >= 0.05 above the
linear rule over the same features. On task 3 that linear rule is already at 0.945 exact, so the
target is 0.995. This script fits (on train, as the search does; validation part 0.4 as in
`runs/babi-3-generic.toml`) the linear rule over all 56 generic features plus hand-written
products that encode the mechanisms a rule would need, and prints validation and test exact and
per-hop accuracy (each hop scored given the rule's own earlier choices):

  hop-3 terms   hop^2 * link * recency and the same times after_anchor: at the third hop, the
                latest sentence about the anchor's person before the anchor (that person's
                previous move);
  anchor verbs  q_words * after_anchor * a_WORD and q_words * a_WORD for the take and drop words
                of the vocabulary: at the second hop, the move to the question's place comes
                after a taking anchor and before a dropping one;
  with link     the same times link (the move is by the anchor's person);
  screened      and the 16 products the product screen ranks first against the linear rule (the
                seeds of runs/babi-3-generic.toml: word indicators times latest mentions, ...);
  move words    and the hop-3 terms times w_WORD for the movement words: the person's previous
                *move* before the anchor, skipping what they did with objects in between
                (products of 5 and 6 features);
  word groups   the hop-3 terms, the hop-3 terms times the movement words and the anchor verbs
                with link, each kind of word entering as one summed factor (w_went + w_moved +
                ...; a_took + a_got + ...; a_dropped + ...): a soft OR with one weight per kind
                instead of one per word, so no single word's weight outweighs a step of recency.
  before-anchor the same kinds, each product written where its hop looks: before = 1 -
                after_anchor as a factor (the person's latest move *before* the anchor; the
                move to the question's place before a dropping anchor), hop^2 for the third
                hop's products and hop for the second's; no screened products.

The products name words of the vocabulary (`a_took`, ...) that a human picked: they show what the
features can express, not what a search found. No search, no gate. Seconds of CPU: run it when
nothing else does.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evo_rules.evaluate import fit_and_score, rescore  # noqa: E402
from evo_rules.fit_settings import FitSettings  # noqa: E402
from evo_rules.fitness.registry import get_task  # noqa: E402
from evo_rules.screening import screen_products  # noqa: E402

MOVES = ("went", "moved", "journeyed", "travelled", "back")
TAKES = ("took", "got", "picked", "grabbed")
DROPS = ("dropped", "discarded", "put", "left")
SCREENED = 16  # the product screen's pairs, as runs/babi-3-generic.toml seeds them
TAKE_DROP = TAKES + DROPS


def rows(task, screened: list[tuple[str, str, float]] | None = None) -> dict[str, str]:
    """Name -> the products added to the linear rule; `screened`: the product screen's pairs
    (evo_rules.screening), added in one more row."""
    features = set(task.batch("train").X)
    words = [w for w in TAKE_DROP if "a_" + w in features]
    hop3 = ("(mul w x.hop x.hop x.link x.recency) "
            "(mul w x.hop x.hop x.link x.recency x.after_anchor)")
    verbs = " ".join(f"(mul w x.q_words x.after_anchor x.a_{w}) (mul w x.q_words x.a_{w})" for w in words)
    verbs_link = " ".join(f"(mul w x.q_words x.after_anchor x.link x.a_{w}) (mul w x.q_words x.link x.a_{w})"
                          for w in words)
    out = {"linear (56 features)": "",
           "+ hop-3 terms (2 products)": hop3,
           f"+ hop-3 terms + anchor verbs ({2 + 2 * len(words)} products)": hop3 + " " + verbs,
           f"+ hop-3 terms + anchor verbs with link ({2 + 2 * len(words)} products)": hop3 + " " + verbs_link}
    if screened:
        pairs = " ".join(f"(mul w x.{a} x.{b})" for a, b, _ in screened)
        out[f"+ the screen's {len(screened)} products + hop-3 terms + anchor verbs with link"] = (
            pairs + " " + hop3 + " " + verbs_link)
        moves = [w for w in MOVES if "w_" + w in features]
        hop3_moves = " ".join(f"(mul w x.hop x.hop x.link x.recency x.w_{w}) "
                              f"(mul w x.hop x.hop x.link x.recency x.after_anchor x.w_{w})" for w in moves)
        out[f"the same + hop-3 terms times {len(moves)} move words"] = (
            pairs + " " + hop3 + " " + verbs_link + " " + hop3_moves)
    out["word groups: hop-3 terms, times the move words' sum; anchor verbs with link, summed by kind"] = \
        grouped(features, hop3)
    out["before-anchor factors: the word groups, each hop's products looking back with 1 - after_anchor"] = \
        looking_back(features)
    return out


def _sum(prefix: str, words, features) -> str:
    """One factor for a kind of word: the sum of its indicators that the vocabulary has."""
    names = [f"x.{prefix}{w}" for w in words if prefix + w in features]
    return names[0] if len(names) == 1 else "(add " + " ".join(names) + ")"


def grouped(features, hop3: str) -> str:
    """The hop-3 and anchor-verb products with each kind of word summed into one factor ("went"
    and "went back" count alike: "back" is left out)."""
    m = _sum("w_", MOVES[:-1], features)
    hop3_moves = f"(mul w x.hop x.hop x.link x.recency {m}) (mul w x.hop x.hop x.link x.recency x.after_anchor {m})"
    verbs = " ".join(f"(mul w x.q_words x.after_anchor x.link {k}) (mul w x.q_words x.link {k})"
                     for k in (_sum("a_", TAKES, features), _sum("a_", DROPS, features)))
    return hop3 + " " + hop3_moves + " " + verbs


def looking_back(features) -> str:
    """The word groups' mechanisms, each written where it looks: before = 1 - after_anchor as a
    factor (a product with after_anchor and a negative weight is not the same: it is 0 before the
    anchor too). Third hop (hop^2): the person's latest move before the anchor, and their moves
    at all; second hop (hop): the move to the question's place after a take, before a drop."""
    m, take, drop = _sum("w_", MOVES[:-1], features), _sum("a_", TAKES, features), _sum("a_", DROPS, features)
    before = "(add 1 (mul -1 x.after_anchor))"
    return (f"(mul w x.hop x.hop x.link {m} {before} x.recency) (mul w x.hop x.hop x.link {before} x.recency) "
            f"(mul w x.hop x.hop x.link {m}) "
            f"(mul w x.hop x.q_words x.link x.after_anchor {take}) (mul w x.hop x.q_words x.link {before} {drop}) "
            f"(mul w x.hop x.q_words x.link)")


def main() -> int:
    task = get_task("babi-3", valid_fraction=0.4, features="generic")
    linear = task.linear_rule_text()
    print("babi-3, generic features, valid_fraction 0.4; exact / hop1 / hop2 / hop3")
    print(f"| rule | valid | test |\n|---|---|---|")
    screened = screen_products(task, FitSettings.coerce(None), SCREENED)
    for name, extra in rows(task, screened).items():
        text = linear[:-1] + " " + extra + ")" if extra else linear
        fitted = fit_and_score(text, task)
        if not fitted.valid:
            print(f"| {name} | invalid fit | |")
            continue
        test = rescore(text, fitted, task, "test")

        def cell(m):
            return " / ".join(f"{m[k]:.3f}" for k in ("exact", "hop1", "hop2", "hop3"))

        print(f"| {name} | {cell(fitted.metrics)} | {cell(test.metrics)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
