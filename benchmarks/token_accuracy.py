"""Token estimators vs exact counts, per script (goal: English within ±5 %, no script
under-counted by more than 3 %).

For the tokenizers the tool may have to estimate (``xlm-roberta`` for bge-m3 and
bge-reranker-base, ``qwen3`` for qwen3-embedding, ``m2m100``), each text of
``benchmarks/data/token_corpus.json`` (about 170 texts in 14 scripts) is counted by the
calibrated estimator and by the reference: the exact tokenizer when the ``tokens`` extra is
installed, else the exact counts recorded in the corpus. m2m100 has no tokenizer that can
run here: its references are the encodings published in transformers' tests (English and
French). Per script it prints the mean error (the mean of estimate ÷ exact − 1 over the
texts), the worst under- and over-count of one text, and the old ``ceil(bytes / 3) + 2``
rule's mean for comparison.

    python3 benchmarks/token_accuracy.py [--short]   # measure (--short: every third text)
    python3 benchmarks/token_accuracy.py --record    # re-record exact counts (needs [tokens])
    python3 benchmarks/token_accuracy.py --calibrate # refit data/tokenizers.json (needs scipy)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from typing import Any

from common import ROOT, result

from pipelines.catalog.estimate import FEATURES
from pipelines.catalog.tokens import exact_tokenizer, tokenizer_facts

CORPUS = ROOT / "benchmarks" / "data" / "token_corpus.json"
FACTS = ROOT / "pipelines" / "catalog" / "data" / "tokenizers.json"
KINDS = ("xlm-roberta", "qwen3", "llama3", "o200k-harmony", "tekken", "m2m100")
EXACT_KINDS = ("xlm-roberta", "qwen3", "llama3", "o200k-harmony", "tekken")
ENGLISH_GOAL, UNDER_GOAL = 0.05, -0.03


def load_corpus() -> list[dict[str, Any]]:
    texts: list[dict[str, Any]] = json.loads(CORPUS.read_text(encoding="utf-8"))["texts"]
    return texts


def references(kind: str, texts: list[dict[str, Any]]) -> tuple[list[int | None], str]:
    """Exact counts for each text (None where none is known) and where they come from."""
    exact = exact_tokenizer(kind)  # type: ignore[arg-type]
    if exact is not None:
        return list(exact.counts([t["text"] for t in texts])), f"exact ({exact.source})"
    recorded = [t.get("reference", {}).get(kind) for t in texts]
    source = "published encodings" if kind == "m2m100" else "counts recorded in the corpus"
    return recorded, source


def old_rule(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 3) + 2


def per_script(kind: str, texts: list[dict[str, Any]]) -> tuple[dict[str, dict[str, float]], str]:
    """Error statistics by script for ``kind``'s estimator."""
    estimator = tokenizer_facts(kind).estimator  # type: ignore[arg-type]
    assert estimator is not None
    refs, source = references(kind, texts)
    errors: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for text, ref in zip(texts, refs, strict=True):
        if ref:
            estimate = estimator.count(text["text"])
            errors[text["script"]].append((estimate / ref - 1, old_rule(text["text"]) / ref - 1))
    stats = {
        script: {
            "n": len(pairs),
            "mean": statistics.fmean(e for e, _ in pairs),
            "worst_under": min(e for e, _ in pairs),
            "worst_over": max(e for e, _ in pairs),
            "old_mean": statistics.fmean(o for _, o in pairs),
        }
        for script, pairs in errors.items()
    }
    return stats, source


def report(kind: str, stats: dict[str, dict[str, float]], source: str) -> None:
    print(f"\n{kind} estimator vs {source}")
    print(f"{'script':18} {'texts':>5} {'mean':>8} {'worst -':>8} {'worst +':>8} {'old rule':>9}")
    for script, s in stats.items():
        print(
            f"{script:18} {s['n']:5.0f} {s['mean']:+8.1%} {s['worst_under']:+8.1%} "
            f"{s['worst_over']:+8.1%} {s['old_mean']:+9.1%}"
        )
    english = stats["english"]["mean"]
    result(
        "T1",
        f"{kind} estimate, English: mean error",
        english * 100,
        "within ±5 %",
        abs(english) <= ENGLISH_GOAL,
        shown=f"{english:+.1%}",
        extra={"kind": kind, "reference": source},
    )
    script, low = min(((k, v["mean"]) for k, v in stats.items()), key=lambda kv: kv[1])
    result(
        "T1",
        f"{kind} estimate, most under-counted script: mean error",
        low * 100,
        "not under -3 %",
        low >= UNDER_GOAL,
        shown=f"{low:+.1%} ({script})",
        extra={"kind": kind, "script": script, "reference": source},
    )


def record() -> None:
    """Rewrite the corpus's exact reference counts with the installed exact tokenizers."""
    raw = json.loads(CORPUS.read_text(encoding="utf-8"))
    for kind in EXACT_KINDS:
        exact = exact_tokenizer(kind)  # type: ignore[arg-type]
        if exact is None:
            raise SystemExit(f"error: no exact {kind} tokenizer: pip install -e '.[tokens]'")
        counts = exact.counts([t["text"] for t in raw["texts"]])
        for text, n in zip(raw["texts"], counts, strict=True):
            text.setdefault("reference", {})[kind] = n
    CORPUS.write_text(json.dumps(raw, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"recorded exact counts for {len(raw['texts'])} texts in {CORPUS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="every third text (CI smoke)")
    parser.add_argument("--record", action="store_true", help="re-record exact counts")
    parser.add_argument("--calibrate", action="store_true", help="refit the estimators")
    args = parser.parse_args()
    if args.record:
        record()
        return
    if args.calibrate:
        from token_calibrate import calibrate

        calibrate(load_corpus(), FACTS)
        return
    texts = load_corpus()
    if args.short:
        # every third text, and every text with a published m2m100 encoding (only six)
        texts = [t for i, t in enumerate(texts) if i % 3 == 0 or "m2m100" in t["reference"]]
    for kind in KINDS:
        stats, source = per_script(kind, texts)
        report(kind, stats, source)
    print(f"\nestimator features: {', '.join(FEATURES)}")


if __name__ == "__main__":
    main()
