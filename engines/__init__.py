"""sasq.engines: the decoding loop and every backend it drives, and the lint
(docs/architecture.md, "The decoding loop and its backends")."""
