"""Where an int8 number came from (issue 27): the CPU's int8 features and, per backend, the
int8 kernels its step runs and the export's u8 x s8 form. ``bench.json``, ``eval.json``,
``compare.json`` and the demo report carry these records, their markdown one line each.

ONNX Runtime's int8 results differ by CPU only where a u8 x s8 product can saturate (a CPU
without VNNI, full 8-bit operands); sasq's sessions run such graphs as s8 x s8 there
(``engines/ort_session``), so a record says both what ran and why it was exact.
"""

from __future__ import annotations

from sasq.engines.int8_kernels import cpu_int8


def cpu_record() -> dict:
    """This machine's int8 features (``CpuInt8.as_dict``)."""
    return cpu_int8().as_dict()


def backend_record(backend) -> dict | None:
    """What one backend's int8 products run on: an ONNX Runtime backend's step session
    (kernels, why, its export's form); a TensorRT engine's own kernels; None for torch."""
    report = getattr(backend, "int8_report", None)
    return report() if callable(report) else None


def cpu_line(cpu: dict) -> str:
    flags = cpu.get("int8_flags")
    exact = "saturates on 8-bit operands" if cpu.get("u8s8_saturates") else "exact"
    shown = " ".join(flags) if flags else ("unknown" if flags is None else "none")
    return (f"CPU int8 features: {shown} ({cpu.get('machine')}); ONNX Runtime's u8 x s8 "
            f"kernel here: {cpu.get('u8s8_kernel')}, {exact}")  # fmt: skip


def backend_line(name: str, rec: dict | None) -> str | None:
    """``name``: kernels (why); export form. None for a backend without int8 (torch)."""
    if not rec:
        return None
    form = rec.get("export_u8s8")
    tail = f"; export u8s8 form {form['form']}" if isinstance(form, dict) else ""
    return f"{name}: {rec.get('kernels')} ({rec.get('reason')}){tail}"


def report_lines(cpu: dict | None, backends: dict | None) -> list[str]:
    """Markdown: the CPU line, then one line per backend with int8 (bench, compare)."""
    if not cpu:
        return []
    lines = [f"- {line}" for n, rec in (backends or {}).items() if (line := backend_line(n, rec))]
    return ["", cpu_line(cpu) + (". int8 kernels by backend:" if lines else "."), "", *lines]


def grouped_lines(int8: dict | None) -> list[str]:
    """Markdown list items (eval): the CPU line, and the cells grouped by the kernels they
    ran (``{"cpu": ..., "cells": {row: {bits: record}}}``)."""
    if not int8:
        return []
    groups: dict[str, list[str]] = {}
    for row, by_bits in int8.get("cells", {}).items():
        for bits, rec in by_bits.items():
            if text := backend_line("", rec):
                groups.setdefault(text.removeprefix(": "), []).append(f"{row} {bits}")
    out = [f"- {cpu_line(int8['cpu'])}"] if int8.get("cpu") else []
    return out + [f"- int8 kernels {k}: {', '.join(v)}" for k, v in groups.items()]
