"""File names read from a stranger's files stay inside their folder.

An export folder (and a calibration cache's .npz reference) names files in JSON and in ONNX
external-data entries; sasq opens, hashes and copies what they name. A name is accepted
only if it is a *plain* file name: one path component, not ``.``/``..``, no separator of
any platform, not absolute, not hidden, no NUL, at most 255 bytes. A plain name can still
be a symlink placed in the folder, so whatever is opened is also checked to resolve inside
the folder. Refusals are one-line ``UserError``s naming the file that holds the name.

These checks run before onnx or ONNX Runtime opens anything: ``onnx.load`` and ORT follow
external-data locations relative to the model's folder, ``../`` included.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sasq.errors import UserError

if TYPE_CHECKING:  # onnx loads where a graph is read, not where a name is checked
    import onnx

_MAX_NAME_BYTES = 255  # NAME_MAX of every common file system


def is_plain_name(name: object) -> bool:
    """True for a single visible file name that cannot leave its folder."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        return False
    if name.startswith(".") or "\0" in name or "/" in name or "\\" in name:
        return False
    if os.path.isabs(name) or len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        return False
    return Path(name).name == name


def check_plain_name(name: object, source: str | Path, what: str) -> str:
    """``name`` if it is plain, else ``UserError``: '<source>: <what> <name> is not ...'."""
    if not is_plain_name(name):
        raise UserError(
            f"{source}: {what} {name!r} is not a plain file name inside the folder; refused"
        )
    return name  # type: ignore[return-value]


def inside(folder: str | Path, name: str, source: str | Path) -> Path:
    """``folder / name`` after checking the name is plain and, if it is a symlink, that it
    resolves to a file inside ``folder`` (a link to ``~/.bashrc`` would let a reader or a
    copy reach outside)."""
    check_plain_name(name, source, "file")
    path = Path(folder) / name
    if path.is_symlink():
        target, root = path.resolve(), Path(folder).resolve()
        if root not in target.parents:
            raise UserError(f"{path}: symlink leads outside {folder}; refused")
    return path


def _node_tensors(nodes) -> Iterator[onnx.TensorProto]:
    """Tensors in node attributes, subgraphs included."""
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _graph_tensors(g)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of a graph: initializers, sparse ones, node attributes, subgraphs."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    yield from _node_tensors(graph.node)


def external_locations(model: onnx.ModelProto) -> set[str]:
    """Every external-data ``location`` the model's tensors (functions' included) name."""
    tensors = [*_graph_tensors(model.graph)]
    for f in model.functions:
        tensors.extend(_node_tensors(f.node))
    return {
        next((e.value for e in t.external_data if e.key == "location"), "")
        for t in tensors
        if t.data_location == t.EXTERNAL
    }


def check_external_data(
    onnx_path: str | Path, allowed: set[str] | None = None, model: onnx.ModelProto | None = None
) -> None:
    """Refuse a graph whose external data lies outside its folder, or (with ``allowed``) in
    a file its manifest does not list. Reads the graph without its external data."""
    onnx_path = Path(onnx_path)
    if model is None:
        import onnx

        try:
            model = onnx.load(str(onnx_path), load_external_data=False)
        except Exception as e:  # protobuf's DecodeError and friends
            raise UserError(f"{onnx_path}: cannot be read as ONNX ({type(e).__name__})") from None
    for loc in sorted(external_locations(model)):
        check_plain_name(loc, onnx_path, "external data location")
        if allowed is not None and loc not in allowed:
            raise UserError(
                f"{onnx_path}: external data {loc!r} is not a file its manifest lists; refused"
            )
        inside(onnx_path.parent, loc, onnx_path)
