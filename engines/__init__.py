"""sasq.engines: see DESIGN.md."""
