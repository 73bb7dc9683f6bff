"""What a user runs end to end: ``sasq demo`` (``demo``, its report ``demo_report``), the
self-tests (``selftest`` on the CPU, ``gpu_selftest`` for TensorRT) and the files of
``sasq edit`` (``edit_files``: input image, mask, result sheet; the editing itself is a
decoding-loop feature, ``sasq.engines.edit``). May import every tools subpackage but
``cli`` and ``train``."""

__all__ = ["demo", "edit_files", "gpu_selftest", "selftest"]
