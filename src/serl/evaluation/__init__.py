"""Evaluation: math benchmarks and MMLU-Pro with the paper's protocol (`serl eval`), usable in a training loop.

- `evaluate_math(engine, tokenizer, problems, ...)` -> (metrics, per-question records)
- `evaluate_mmlu_pro(engine, questions, ...)` -> (metrics, per-question records)
- `load_math(name_or_path, data_dir)`, `mmlu_pro.load_questions(path)` load the data
"""

from serl.evaluation.math_eval import evaluate_math, load_math, math_metrics
from serl.evaluation.metrics import pass_at_k, sampled_metrics
from serl.evaluation.mmlu_pro import evaluate_mmlu_pro, load_questions, mmlu_metrics

__all__ = [
    "evaluate_math",
    "evaluate_mmlu_pro",
    "load_math",
    "load_questions",
    "math_metrics",
    "mmlu_metrics",
    "pass_at_k",
    "sampled_metrics",
]
