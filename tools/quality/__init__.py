"""Quality against the FP model: ``sasq eval`` (``evaluate``, its precision rows in
``eval_precision``), 95% intervals by half-sampling (``intervals``), the digits classifier
and data (``classifier``, ``digits``) behind IS/FID (``scores``), ``sasq compare``
(``compare``), attention concentration (``attention_stats``), the shift-and-sum budget
sweep (``budget_sweep``) and edit quality (``edit_quality``). May import ``report`` and
``measure`` (the sweep times what it scores)."""

__all__ = [
    "attention_stats",
    "budget_sweep",
    "classifier",
    "compare",
    "config",
    "digits",
    "edit_quality",
    "evaluate",
    "intervals",
    "scores",
]
