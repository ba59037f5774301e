"""Score generated text: COCO caption metrics for descriptions, attribute accuracy for regions.

Caption metrics use the standard COCO caption tooling (pycocoevalcap, as the reference code does):
BLEU-1..4, METEOR, ROUGE-L, CIDEr, and SPICE when its Stanford CoreNLP models are installed. The PTB
tokenizer, METEOR and SPICE run Java (about a second of start-up each). SPICE needs CoreNLP 3.6.0
jars that pycocoevalcap downloads on first use; offline they are absent, and the metrics then say
`"SPICE": null` with the reason under `"unavailable"` instead of a made-up number.

Command line::

    python -m training.evaluate --pred PRED.json --ref REF.json -o metrics.json [--attrs GT.json]

PRED: COCO results `[{image_id, caption}]`, reference-code answers (JSON list or JSONL of
`{question_id, text}`), or `{id: text}`. REF: COCO caption ground truth, a reference description
file (its gpt answers), or `{id: [texts]}`. GT (optional): `{id: {name, color, shape, size}}` for
attribute accuracy of the same predictions.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path

from mgimm_core.errors import MGIMMError

log = logging.getLogger(__name__)

BLEU_KEYS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
CAPTION_METRICS = BLEU_KEYS + ("METEOR", "ROUGE-L", "CIDEr", "SPICE")
JAVA_METRICS = ("METEOR", "SPICE")
# Keys as mgimm_core.vocabulary spells them ("color"); "colour" is accepted as an alias.
ATTRIBUTE_KEYS = ("name", "color", "shape", "size")
_KEY_ALIASES = {"colour": "color", "class": "name", "category": "name"}


class EvaluationError(MGIMMError, ValueError):
    """Predictions and references cannot be scored together (ids disagree, unreadable file, ...)."""


# --- tokenizing -----------------------------------------------------------------------------------

def _clean(text: str) -> str:
    """One line of text: newlines inside a description would break the line-based Java tools."""
    return " ".join(str(text).split())


def simple_tokenize(text: str) -> str:
    """Lower-case words and numbers, punctuation dropped: close to the PTB tokenizer on plain
    captions, but pure Python (no Java). For tests and Java-less machines."""
    return " ".join(re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower()))


def _ptb_tokenize(texts: dict[str, list[str]]) -> dict[str, list[str]]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # PTBTokenizer loses trailing empty lines, so empty texts are tokenized as "" afterwards.
    present = {k: [{"caption": t} for t in v if t] for k, v in texts.items()}
    present = {k: v for k, v in present.items() if v}
    tokenized = PTBTokenizer().tokenize(present) if present else {}
    out = {}
    for key, items in texts.items():
        done = iter(tokenized.get(key, []))
        out[key] = [next(done) if t else "" for t in items]
    return out


def _tokenize(texts: dict[str, list[str]], tokenizer: str) -> dict[str, list[str]]:
    cleaned = {k: [_clean(t) for t in v] for k, v in texts.items()}
    if tokenizer == "ptb":
        return _ptb_tokenize(cleaned)
    if tokenizer == "simple":
        return {k: [simple_tokenize(t) for t in v] for k, v in cleaned.items()}
    raise ValueError(f"tokenizer must be 'ptb' or 'simple', got {tokenizer!r}")


# --- availability -------------------------------------------------------------------------------

def java_unavailable_reason() -> str | None:
    """None when a working `java` is on PATH, else why not."""
    if shutil.which("java") is None:
        return "no 'java' on PATH (install a Java runtime, e.g. openjdk-17-jre-headless)"
    try:
        subprocess.run(["java", "-version"], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"'java -version' failed: {exc}"
    return None


def spice_unavailable_reason() -> str | None:
    """None when SPICE can run offline, else why not (checked without downloading anything)."""
    java = java_unavailable_reason()
    if java:
        return java
    try:
        from pycocoevalcap.spice import get_stanford_models as gsm
    except ImportError:
        return "pycocoevalcap is not installed (pip install pycocoevalcap)"
    lib = Path(gsm.SPICEDIR) / gsm.SPICELIB
    missing = [name for name in (f"{gsm.JAR}.jar", f"{gsm.JAR}-models.jar")
               if not (lib / name).is_file()]
    if missing:
        return (f"Stanford CoreNLP jars {', '.join(missing)} are missing from {lib}; pycocoevalcap "
                f"downloads them from nlp.stanford.edu on first use, which needs internet access. "
                f"Copy them there from {gsm.CORENLP}.zip to enable SPICE")
    return None


# --- caption metrics ----------------------------------------------------------------------------

def _check_ids(predictions: Mapping, references: Mapping) -> tuple[dict, dict]:
    preds = {str(k): ("" if v is None else str(v)) for k, v in predictions.items()}
    refs = {}
    for key, value in references.items():
        texts = [value] if isinstance(value, str) else list(value)
        if not texts or not any(str(t).strip() for t in texts):
            raise EvaluationError(f"reference {key!r} has no text; give every id at least one "
                                  f"reference caption or drop the id")
        refs[str(key)] = [str(t) for t in texts if str(t).strip()]
    if not refs:
        raise EvaluationError("no references to score against; pass a non-empty reference set")
    unknown = sorted(set(preds) - set(refs))
    missing = sorted(set(refs) - set(preds))
    if unknown:
        raise EvaluationError(f"{len(unknown)} prediction id(s) have no reference, e.g. "
                              f"{unknown[:5]}; check that both files use the same image ids")
    if missing:
        raise EvaluationError(f"{len(missing)} reference id(s) have no prediction, e.g. "
                              f"{missing[:5]}; predict every id or score a matching subset")
    return preds, refs


def evaluate_captions(predictions: Mapping[object, str], references: Mapping[object, Sequence[str]],
                      *, metrics: Sequence[str] = CAPTION_METRICS, tokenizer: str = "ptb"
                      ) -> dict:
    """COCO caption metrics of one prediction per id against that id's reference texts.

    Ids are compared as text (JSON keys are strings, COCO ids are ints). Returns a dict with one
    float per requested metric (corpus-level, as pycocoevalcap reports them; CIDEr is on its usual
    0-10 scale), None for a metric that cannot run here with its reason under "unavailable", plus
    "count" (ids scored) and "tokenizer". `tokenizer="simple"` avoids Java for tokenizing.
    """
    unknown = [m for m in metrics if m not in CAPTION_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {CAPTION_METRICS}")
    preds, refs = _check_ids(predictions, references)
    # One tokenizer run for both sides (one Java start-up with PTB).
    both = _tokenize({**{("ref", k): v for k, v in refs.items()},
                      **{("pred", k): [preds[k]] for k in refs}}, tokenizer)
    gts = {k: both[("ref", k)] for k in refs}
    res = {k: both[("pred", k)] for k in refs}

    out: dict = {"count": len(refs), "tokenizer": tokenizer}
    unavailable: dict[str, str] = {}
    if any(m in BLEU_KEYS for m in metrics):
        from pycocoevalcap.bleu.bleu import Bleu

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        out.update({k: float(s) for k, s in zip(BLEU_KEYS, bleu) if k in metrics})
    if "METEOR" in metrics:
        reason = java_unavailable_reason()
        if reason:
            out["METEOR"], unavailable["METEOR"] = None, reason
        else:
            from pycocoevalcap.meteor.meteor import Meteor

            scorer = Meteor()
            try:
                score, _ = scorer.compute_score(gts, res)
            finally:
                del scorer  # stops its Java process
            out["METEOR"] = float(score)
    if "ROUGE-L" in metrics:
        from pycocoevalcap.rouge.rouge import Rouge

        out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if "CIDEr" in metrics:
        from pycocoevalcap.cider.cider import Cider

        out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if "SPICE" in metrics:
        out["SPICE"] = None
        reason = spice_unavailable_reason()
        if reason is None:
            try:
                from pycocoevalcap.spice.spice import Spice

                out["SPICE"] = float(Spice().compute_score(gts, res)[0])
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                reason = f"SPICE failed to run: {exc}"
        if reason:
            unavailable["SPICE"] = reason
            log.warning("SPICE unavailable: %s", reason)
    if unavailable:
        out["unavailable"] = unavailable
    return out


# --- attribute accuracy -------------------------------------------------------------------------

def _default_parse() -> Callable[[str], dict]:
    try:
        from mgimm_core.vocabulary import parse_attributes
    except ImportError as exc:
        raise EvaluationError(f"mgimm_core.vocabulary.parse_attributes is not available ({exc}); "
                              f"pass parse=<callable text -> attribute dict>") from None
    return parse_attributes


def _normalise(attrs) -> dict[str, str]:
    if not attrs:
        return {}
    out = {}
    for key, value in dict(attrs).items():
        key = _KEY_ALIASES.get(str(key).lower(), str(key).lower())
        if value is not None:
            out[key] = " ".join(str(value).lower().split())
    return out


def attribute_accuracy(pred_texts, gt_attrs, *, parse: Callable[[str], dict] | None = None,
                       keys: Sequence[str] = ATTRIBUTE_KEYS) -> dict:
    """Share of region answers whose parsed attributes match the ground truth, per attribute.

    `pred_texts` and `gt_attrs` are dicts keyed by the same ids (or sequences in the same order):
    answer text and ground-truth attributes ({"name": ..., "color": ..., "shape": ...,
    "size": ...}). Each attribute is scored over the samples whose ground truth has it, so "size"
    appears only when present; "all" is the share of samples with every scored attribute right.
    `parse` turns a text into an attribute dict (default: mgimm_core.vocabulary.parse_attributes).
    Values compare case- and space-insensitively; "colour" counts as "color". Other vocabulary
    keys (orientation, position) are scored when passed in `keys`.
    """
    if isinstance(pred_texts, Mapping) != isinstance(gt_attrs, Mapping):
        raise EvaluationError("pred_texts and gt_attrs must both be dicts or both be sequences")
    if isinstance(pred_texts, Mapping):
        preds = {str(k): t for k, t in pred_texts.items()}
        gts = {str(k): a for k, a in gt_attrs.items()}
        missing = sorted(set(gts) - set(preds))
        if missing:
            raise EvaluationError(f"{len(missing)} id(s) with ground-truth attributes have no "
                                  f"prediction, e.g. {missing[:5]}")
        pairs = [(preds[k], gts[k]) for k in sorted(gts)]
    else:
        if len(pred_texts) != len(gt_attrs):
            raise EvaluationError(f"{len(pred_texts)} predictions but {len(gt_attrs)} ground-truth "
                                  f"attribute sets; pass them in matching order")
        pairs = list(zip(pred_texts, gt_attrs))
    parse = parse or _default_parse()
    keys = [_KEY_ALIASES.get(k, k) for k in keys]
    correct = dict.fromkeys(keys, 0)
    support = dict.fromkeys(keys, 0)
    all_right = 0
    for text, attrs in pairs:
        truth = _normalise(attrs)
        guess = _normalise(parse(text or ""))
        right = True
        for key in keys:
            if key in truth:
                support[key] += 1
                hit = guess.get(key) == truth[key]
                correct[key] += hit
                right &= hit
        all_right += right
    out: dict = {k: correct[k] / support[k] for k in keys if support[k]}
    out["all"] = all_right / len(pairs) if pairs else None
    out["support"] = {k: support[k] for k in keys if support[k]}
    out["count"] = len(pairs)
    return out


# --- files and the command ----------------------------------------------------------------------

def _read_json_or_jsonl(path: Path):
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"{path}: neither JSON nor JSON Lines ({exc.msg} at line "
                                  f"{exc.lineno}); write the file as JSON") from None


def load_predictions(path) -> dict[str, str]:
    """{id: text} from COCO results, reference-code answers (JSON/JSONL) or a plain {id: text}."""
    data = _read_json_or_jsonl(path)
    if isinstance(data, dict):
        return {str(k): v for k, v in data.items()}
    if not isinstance(data, list):
        raise EvaluationError(f"{path}: expected a list or an object of predictions")
    out: dict[str, str] = {}
    for index, item in enumerate(data):
        if isinstance(item, dict) and "image_id" in item and "caption" in item:
            key, text = item["image_id"], item["caption"]
        elif isinstance(item, dict) and "question_id" in item and "text" in item:
            key, text = item["question_id"], item["text"]
        else:
            raise EvaluationError(f"{path}: item {index} is neither {{image_id, caption}} nor "
                                  f"{{question_id, text}}; write predictions in one of those forms")
        if str(key) in out:
            raise EvaluationError(f"{path}: id {key!r} is predicted twice (item {index}); keep one "
                                  f"prediction per id")
        out[str(key)] = text
    return out


def load_references(path) -> dict[str, list[str]]:
    """{id: [texts]} from COCO caption ground truth, a reference description file or {id: texts}."""
    from training.data.reference import read_coco_captions

    data = _read_json_or_jsonl(path)
    if isinstance(data, dict) and "annotations" in data:
        return read_coco_captions(path)
    if isinstance(data, dict):
        return {str(k): [v] if isinstance(v, str) else list(v) for k, v in data.items()}
    if isinstance(data, list) and all(isinstance(e, dict) and "conversations" in e for e in data):
        refs: dict[str, list[str]] = {}
        for entry in data:
            answers = [m.get("value", "") for m in entry["conversations"] if m.get("from") == "gpt"]
            refs.setdefault(str(entry.get("image_id")), []).extend(answers[:1])
        return refs
    raise EvaluationError(f"{path}: not COCO caption ground truth, a description file or "
                          f"{{id: [texts]}}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate",
                                     description="Score predictions; write a metrics JSON.")
    parser.add_argument("--pred", required=True, help="predictions file (see module docstring)")
    parser.add_argument("--ref", required=True, help="reference captions file")
    parser.add_argument("--attrs", help="ground-truth attributes {id: {name, color, shape, size}}")
    parser.add_argument("-o", "--output", help="metrics JSON to write (default: stdout)")
    parser.add_argument("--tokenizer", choices=("ptb", "simple"), default="ptb")
    parser.add_argument("--metrics", default=",".join(CAPTION_METRICS),
                        help="comma-separated subset of " + ",".join(CAPTION_METRICS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        preds = load_predictions(args.pred)
        result = {"pred": args.pred, "ref": args.ref,
                  "pycocoevalcap": metadata.version("pycocoevalcap"),
                  "captions": evaluate_captions(preds, load_references(args.ref),
                                                metrics=[m.strip() for m in args.metrics.split(",")
                                                         if m.strip()],
                                                tokenizer=args.tokenizer)}
        if args.attrs:
            gt = json.loads(Path(args.attrs).read_text(encoding="utf-8"))
            wanted = {str(k) for k in gt}
            result["attributes"] = attribute_accuracy(
                {k: t for k, t in preds.items() if k in wanted}, gt)
    except (MGIMMError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
