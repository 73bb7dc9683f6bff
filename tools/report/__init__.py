"""What every report shares: PNG plots (``plots``), labelled image grids and per-image PNGs
(``image_grid``), and where an int8 number came from (``int8_record``: the CPU's int8
features, each backend's kernels). Imports nothing else from sasq.tools."""

__all__ = ["image_grid", "int8_record", "json_md", "plots"]
