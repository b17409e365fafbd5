"""Lossless weight compression: DFloat11 (Zhang et al. 2025, arXiv 2504.11651) for bfloat16 models.

``compress_model(MODEL, OUT)`` writes a folder that ``longreach.models.load_model(OUT)`` loads bit-exactly.
Modules: :mod:`huffman` (length-limited canonical codes), :mod:`kernels` (numba pack/decode),
:mod:`codec` (one tensor), :mod:`fileformat` (the ``.df11`` container), :mod:`model` (whole models).
"""

from longreach.weights.codec import EncodedTensor, decode, encode
from longreach.weights.fileformat import CompressedFile
from longreach.weights.model import CompressionSummary, compress_model, load_compressed

__all__ = [
    "CompressedFile",
    "CompressionSummary",
    "EncodedTensor",
    "compress_model",
    "decode",
    "encode",
    "load_compressed",
]
