"""sasq.tools: what runs on top of the library, in subpackages by purpose.

======== ============================================================== =================
package  holds                                                          may import (tools)
======== ============================================================== =================
report   what every report shares: PNG plots, image grids, int8 records  nothing
measure  speed: bench, per-op profile, GEMM peaks, timing steadiness     report
quality  quality against FP: eval with intervals, the digits classifier  report, measure
         and FID/IS, compare, attention stats, budget sweep, edit scores
serve    Triton server, model repository, load test                     report
train    training of the embedded models and their model cards          report, quality
apps     what a user runs end to end: demo, self-tests, edit's files     all but cli, train
cli      the ``sasq`` command line, one module per command               all
======== ============================================================== =================

Each subpackage's ``__all__`` names the modules others may import; the rest are its own.
Nothing below tools (models, exporter, calib, engines) imports from here. tests/test_layout.py
checks both rules.
"""
