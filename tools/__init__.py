"""sasq.tools: the CLI, evaluation and training of the default model (the decoding loop
and its backends are sasq.engines)."""
