"""Two tables behind the README's "TensorRT 10 and 11" section, as markdown on stdout.

    python scripts/trt_precision_tables.py forms          # attention form per scale
    python scripts/trt_precision_tables.py ort-fp16 DIR   # what ORT's CPU EP runs in fp16

``forms``: ``exporter.attention_form`` on VAR's patch grids (256 px: head size 64 for every
official depth, 64 x depth / depth) and the embedded models (head size 32).
``ort-fp16``: one profiled step of every scale of an fp16 or Q/DQ export (``sasq export
--dtype fp16``, ``sasq quantize --rest fp16``) under ONNX Runtime's CPU EP; per op type, the
element types its kernels actually read (ORT's InsertCastTransformer runs an fp16 node
without an fp16 CPU kernel in fp32, between casts it adds).
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
from pathlib import Path

import torch

from sasq.engines.ort_session import SessionConfig
from sasq.exporter.attention_form import scale_forms

GRIDS = {
    "VAR 256 px (d16..d30, head 64)": (64, (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)),
    "VAR 512 px (d36, head 64)": (64, (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)),
    "embedded default (head 32)": (32, (1, 2, 3, 4)),
    "embedded digits32 (head 32)": (32, (1, 2, 3, 4, 5, 6, 8)),
}


def forms_table() -> str:
    lines = ["| model | scale (pn) | S_q | S_kv | int8 export | fp8 export | why |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, (head, pns) in GRIDS.items():
        i8 = scale_forms(head, pns, [0] * len(pns))
        f8 = scale_forms(head, pns, [0] * len(pns), fp8=True)
        for a, b in zip(i8, f8, strict=True):
            if a.graph == "step" and b.graph == "step" and a.si < len(pns) - 2:
                continue  # the early scales all fuse: show the last two and any change
            why = a.reason if a.graph != "step" else b.reason if b.graph != "step" else "fuses"
            cells = [name, f"{a.si} ({pns[a.si]})", a.s_q, a.s_kv,
                     f"{a.form.value} ({a.graph})", f"{b.form.value} ({b.graph})", why]  # fmt: skip
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def ort_fp16_table(folder: Path) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SessionConfig(enable_profiling=True, profile_prefix=f"{tmp}/p", intra_op_threads=1)
        from sasq.engines.ort_backend import OrtBackend

        b = OrtBackend(folder, cfg)
        K = b.manifest.model_config["var"]["num_classes"]
        from sasq.engines.decode import generate
        from sasq.models import ModelConfig

        mc = ModelConfig.from_dict(b.manifest.model_config)
        generate(b, torch.arange(2), b.manifest.patch_nums, mc.sampling, 0, K)
        trace = json.loads(Path(b.step_session.end_profiling()).read_text())
    seen: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for e in trace:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        a = e["args"]
        types = sorted({k for d in a.get("input_type_shape", []) for k in d} - {"int64"})
        seen[a["op_name"]]["+".join(types) or "-"] += 1
    lines = ["| op | input types its CPU kernels read (kernel runs) |", "|---|---|"]
    for op in sorted(seen):
        lines.append(f"| {op} | " + ", ".join(f"{k} ({v})" for k, v in seen[op].items()) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["forms"]:
        print(forms_table())
    elif sys.argv[1:2] == ["ort-fp16"] and len(sys.argv) == 3:
        print(ort_fp16_table(Path(sys.argv[2])))
    else:
        sys.exit(__doc__)
