"""sasq.calib: see DESIGN.md."""
