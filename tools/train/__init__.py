"""Training of the embedded digits models (``train_default``) and their model cards
(``model_card``). May import ``report`` and ``quality`` (it scores what it trained)."""

__all__ = ["config", "train_default"]
