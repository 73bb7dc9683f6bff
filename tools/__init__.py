"""sasq.tools: the CLI, the decoding loop, evaluation and training of the default."""
