"""A valid manifest and a valid calibration cache broken field by field (issue 14): every
field given a value of the wrong type, sign or size must be refused in one line that
names the problem, through the CLI, touching nothing (``hostile_inputs.run_cli``).
Split from tests/test_hardening.py, whose world (fixtures ``shared``, ``world``) it shares.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from hostile_inputs import clone, replace_file, run_cli

NAN = float("nan")


def _leaves(obj, path=()):
    """(path, value) of every container and scalar; of a list its first and last items."""
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i in sorted({0, len(obj) - 1}) if obj else ():
            yield from _leaves(obj[i], (*path, i))


def _wrong(value) -> list:
    """Values of the wrong type, sign or size for ``value``'s field."""
    if isinstance(value, bool):
        return ["true"]
    if isinstance(value, int):
        return ["7", -1, 10**18]
    if isinstance(value, float):
        return ["x", NAN, 1e18, -2.0]
    if isinstance(value, str):
        return [7]
    if value is None:
        return ["x"]
    return [{}] if isinstance(value, list) else [[]]


def _mutated(d: dict, path: tuple, value):
    """A deep copy of ``d`` with the field at ``path`` set to ``value``."""
    d = json.loads(json.dumps(d))
    if not path:
        return value
    target = d
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return d


def _fuzz(d: dict, skip: Callable[[tuple, object], bool], run: Callable[[object, Path], None]):
    """Run every mutation of every field of ``d``; fail once, listing every miss."""
    misses, n = [], 0
    for path, value in _leaves(d):
        for bad in _wrong(value):
            if skip(path, bad):
                continue
            n += 1
            try:
                run(_mutated(d, path, bad), Path(f"case{n}"))
            except AssertionError as e:
                misses.append(f"{'.'.join(map(str, path))}={bad!r}: {str(e).splitlines()[0]}")
    assert not misses, f"{len(misses)} of {n} mutations not refused cleanly:\n" + "\n".join(misses)
    return n


def test_manifest_fuzz(world, capfd):
    """Every field of a valid manifest given the wrong type, sign or size: refused, one line."""
    d = json.loads((world.fp / "manifest.json").read_text())

    def skip(path: tuple, bad) -> bool:
        if len(path) > 1 and path[0] == "extra":  # free-form notes
            return True
        in_shape = len(path) > 1 and path[-2] == "shape"  # a dim is a number or a symbol
        return in_shape and bad not in (-1, 10**18)

    def run(manifest, sub: Path) -> None:
        folder = clone(world.fp, world.sandbox / sub)
        replace_file(folder, "manifest.json", json.dumps(manifest).encode())
        argv = ["generate", "--backend", "ort", "--onnx", folder, "--out", world.sandbox / "g"]
        run_cli(argv, world, capfd, 2, "invalid manifest")
        shutil.rmtree(folder)  # checked: the next run's snapshot need not walk 300 clones

    assert _fuzz(d, skip, run) > 300


def test_cache_fuzz(world, capfd):
    """Every field of a valid calibration cache broken: refused, one line, 'recalibrate'."""
    d = json.loads(world.calib.read_text())
    names = sorted(d["ranges"])[:2]
    d["ranges"] = {k: d["ranges"][k] for k in names}  # two tensors stand for all
    d["attention"] = {k: v for k, v in list(d["attention"].items())[:1]}

    def skip(path: tuple, bad) -> bool:
        harmless = path[:1] == ("warnings",) or path in (("settings", "num_samples"),
                                                          ("settings", "seed"))  # fmt: skip
        return (harmless and bad == 10**18) or path[:1] == ("warnings",)

    def run(cache, sub: Path) -> None:
        p = world.sandbox / f"{sub}.json"
        p.write_text(json.dumps(cache))
        argv = ["quantize", "--onnx", world.fp, "--calib", p, "--out", world.sandbox / "q"]
        run_cli(argv, world, capfd, 2, "recalibrate")

    assert _fuzz(d, skip, run) > 40
