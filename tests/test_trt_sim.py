"""The contract simulator refuses each way of breaking TensorRT's I/O contract that the old
TensorRT backend broke (null address for an empty tensor, reading memory a runner freed,
an output written over an input, a shape outside the profile), and otherwise computes
exactly what ONNX Runtime computes on the same graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from sasq.engines.ort_session import make_session
from sasq.engines.trt_sim import DataType, SimContext, SimContractError, SimEngine, SimMemory


@pytest.fixture
def concat_graph(tmp_path):
    """past [2, P, 4] + new [2, l, 4] -> present = Concat(past, 2 * new), s = sum(new)."""
    two = h.make_tensor("two", T.FLOAT, [], [2.0])
    nodes = [
        h.make_node("Mul", ["new", "two"], ["dbl"]),
        h.make_node("Concat", ["past", "dbl"], ["present"], axis=1),
        h.make_node("ReduceSum", ["new"], ["s"], keepdims=0),
    ]
    g = h.make_graph(
        nodes,
        "g",
        [
            h.make_tensor_value_info("past", T.FLOAT, [2, "P", 4]),
            h.make_tensor_value_info("new", T.FLOAT, [2, "l", 4]),
        ],  # fmt: skip
        [
            h.make_tensor_value_info("present", T.FLOAT, [2, "Q", 4]),
            h.make_tensor_value_info("s", T.FLOAT, []),
        ],  # fmt: skip
        [two],
    )
    path = tmp_path / "g.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return path


def _engine(path, mem, p_max=6):
    profiles = [
        {"past": ((2, 0, 4), (2, 0, 4), (2, 0, 4)), "new": ((2, 1, 4), (2, 2, 4), (2, 2, 4))},
        {"past": ((2, 1, 4), (2, 3, 4), (2, p_max, 4)), "new": ((2, 1, 4),) * 3},
    ]
    return SimEngine(path, profiles, mem)


def _bind(ctx: SimContext, mem: SimMemory, past_len: int, new: np.ndarray) -> dict[str, int]:
    ptrs = {"past": mem.malloc(64 * 4), "new": mem.malloc(new.nbytes),
            "present": mem.malloc(64 * 4), "s": mem.malloc(4)}  # fmt: skip
    assert ctx.set_input_shape("past", (2, past_len, 4))
    assert ctx.set_input_shape("new", new.shape)
    mem.to_device(ptrs["new"], new)
    for n, p in ptrs.items():
        assert ctx.set_tensor_address(n, p)
    return ptrs


def test_engine_io_types_come_from_the_graph(concat_graph):
    e = _engine(concat_graph, SimMemory())
    names = [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
    assert names == ["past", "new", "present", "s"]
    assert all(e.get_tensor_dtype(n) == DataType.FLOAT for n in names)
    assert e.get_tensor_profile_shape("past", 1) == [(2, 1, 4), (2, 3, 4), (2, 6, 4)]


def test_a_run_equals_onnx_runtime_and_outputs_land_at_their_addresses(concat_graph):
    mem = SimMemory()
    ctx = _engine(concat_graph, mem).create_execution_context()
    assert ctx.set_optimization_profile_async(1, mem.stream)
    rng = np.random.default_rng(0)
    past, new = rng.normal(size=(2, 3, 4)).astype(np.float32), rng.normal(size=(2, 1, 4))
    new = new.astype(np.float32)
    ptrs = _bind(ctx, mem, 3, new)
    mem.to_device(ptrs["past"], past)
    assert tuple(ctx.get_tensor_shape("present")) == (2, 4, 4)
    assert ctx.execute_async_v3(mem.stream)
    got = np.empty((2, 4, 4), np.float32)
    mem.to_host(ptrs["present"], got)
    want = make_session(concat_graph).run(["present"], {"past": past, "new": new})[0]
    assert np.array_equal(got, want)


def test_empty_past_at_a_null_address_is_refused(concat_graph):
    """Row A: scale 0's past is empty, and an empty CUDA buffer's pointer is 0."""
    mem = SimMemory()
    ctx = _engine(concat_graph, mem).create_execution_context()
    new = np.ones((2, 2, 4), np.float32)
    _bind(ctx, mem, 0, new)
    ctx.set_tensor_address("past", mem.malloc(0))  # what a zero-size allocation gives
    with pytest.raises(SimContractError, match="past: null address.*empty one included"):
        ctx.execute_async_v3(mem.stream)


def test_reading_an_input_the_runner_freed_is_refused(concat_graph):
    """Row B, first generation: a runner that reallocates a grown output frees the buffer
    the next step reads its past from."""
    mem = SimMemory()
    ctx = _engine(concat_graph, mem).create_execution_context()
    ctx.set_optimization_profile_async(1, mem.stream)
    ptrs = _bind(ctx, mem, 2, np.ones((2, 1, 4), np.float32))
    mem.free(ptrs["past"])
    with pytest.raises(SimContractError, match="past: address .* was freed"):
        ctx.execute_async_v3(mem.stream)


def test_an_output_written_over_an_input_is_refused(concat_graph):
    """Row B, later generations: the runner's output buffer fed back as the next input."""
    mem = SimMemory()
    ctx = _engine(concat_graph, mem).create_execution_context()
    ctx.set_optimization_profile_async(1, mem.stream)
    ptrs = _bind(ctx, mem, 2, np.ones((2, 1, 4), np.float32))
    ctx.set_tensor_address("present", ptrs["past"])
    with pytest.raises(SimContractError, match="output present overlaps past"):
        ctx.execute_async_v3(mem.stream)
    ctx.set_tensor_address("present", ptrs["past"] + 8)  # a partial overlap counts too
    with pytest.raises(SimContractError, match="overlaps"):
        ctx.execute_async_v3(mem.stream)


def test_a_buffer_too_small_for_the_shape_is_refused(concat_graph):
    mem = SimMemory()
    ctx = _engine(concat_graph, mem).create_execution_context()
    ctx.set_optimization_profile_async(1, mem.stream)
    ptrs = _bind(ctx, mem, 2, np.ones((2, 1, 4), np.float32))
    ctx.set_tensor_address("present", mem.malloc(2 * 3 * 4 * 4 - 1))
    with pytest.raises(SimContractError, match="present: 96 bytes .* not device memory"):
        ctx.execute_async_v3(mem.stream)
    assert ptrs


def test_shapes_outside_the_profile_are_refused_and_profiles_forget_shapes(concat_graph):
    """Row C: a batch or length outside the active profile fails at set_input_shape."""
    mem = SimMemory()
    ctx = _engine(concat_graph, mem).create_execution_context()
    assert ctx.set_optimization_profile_async(1, mem.stream)
    assert ctx.set_input_shape("past", (2, 6, 4))
    assert not ctx.set_input_shape("past", (2, 7, 4))  # P above the profile's max
    assert not ctx.set_input_shape("past", (4, 3, 4))  # more rows than built for
    assert not ctx.set_input_shape("past", (2, 3))  # wrong rank
    assert not ctx.set_optimization_profile_async(2, mem.stream)
    assert ctx.set_optimization_profile_async(0, mem.stream)
    assert tuple(ctx.get_tensor_shape("past")) == (-1,)  # set the shapes again after a switch
    with pytest.raises(SimContractError, match="input shapes not set"):
        ctx.execute_async_v3(mem.stream)


def test_memory_behaves_like_cuda_malloc(concat_graph):
    mem = SimMemory()
    assert mem.malloc(0) == 0
    a, b = mem.malloc(10), mem.malloc(10)
    assert a and b and abs(a - b) >= 10
    mem.to_device(a, np.arange(10, dtype=np.uint8))
    out = np.empty(10, np.uint8)
    mem.to_host(a, out)
    assert out.tolist() == list(range(10))
    mem.free(a)
    with pytest.raises(SimContractError, match="not a live allocation"):
        mem.free(a)
    with pytest.raises(SimContractError, match="freed"):
        mem.to_host(a, out)
