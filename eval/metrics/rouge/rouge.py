"""ROUGE-1/2/L as a local ``evaluate`` metric module (no hub access), around the ``rouge_score`` package.

Load it with ``evaluate.load("<path to this folder>")``. Returns F1 in [0, 1]; by default the plain mean over
examples (deterministic, unlike the bootstrap aggregator), or per-example lists with ``use_aggregator=False``.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = """ROUGE F1 (rouge1, rouge2, rougeL, optionally rougeLsum) between predictions and references,
computed with Google's rouge_score package (Porter stemming with use_stemmer=True)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of strings (system outputs).
    references: list of strings (one reference each).
    rouge_types: list of rouge types (default ["rouge1", "rouge2", "rougeL"]).
    use_stemmer: Porter-stem tokens before matching (default True).
    use_aggregator: return the mean F1 per type (default True) or a list of per-example F1.
Returns:
    dict rouge type -> F1 in [0, 1] (float, or list of floats without aggregation).
"""

_CITATION = """@inproceedings{lin-2004-rouge, title={ROUGE: A Package for Automatic Evaluation of Summaries},
author={Lin, Chin-Yew}, booktitle={Text Summarization Branches Out}, year={2004}}"""


class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, rouge_types=None, use_stemmer=True, use_aggregator=True):
        rouge_types = list(rouge_types or ["rouge1", "rouge2", "rougeL"])
        scorer = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer)
        per_type = {t: [] for t in rouge_types}
        for pred, ref in zip(predictions, references):
            scores = scorer.score(ref or "", pred or "")
            for t in rouge_types:
                per_type[t].append(float(scores[t].fmeasure))
        if not use_aggregator:
            return per_type
        return {t: (sum(v) / len(v) if v else 0.0) for t, v in per_type.items()}
