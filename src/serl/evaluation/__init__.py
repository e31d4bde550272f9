"""Evaluation: math benchmarks and MMLU-Pro with the paper's protocol (`serl eval`), usable in a training loop.

- `evaluate_math(engine, tokenizer, problems, ...)` -> (metrics, per-question records)
- `evaluate_mmlu_pro(engine, questions, ...)` -> (metrics, per-question records)
- `load_math(name_or_path, data_dir)`, `mmlu_pro.load_questions(path)` load the data

Public names are imported from their submodules on first use (`serl.lazy`), so the report, which needs only the
pure metrics, does not import torch."""

from __future__ import annotations

from serl.lazy import lazy_exports

_EXPORTS = {
    "evaluate_math": "math_eval",
    "load_math": "math_eval",
    "math_metrics": "math_eval",
    "paired_bootstrap": "metrics",
    "pass_at_k": "metrics",
    "sampled_metrics": "metrics",
    "seed_question_bootstrap": "metrics",
    "evaluate_mmlu_pro": "mmlu_pro",
    "load_questions": "mmlu_pro",
    "mmlu_metrics": "mmlu_pro",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
