"""sasq.exporter: see DESIGN.md."""
