"""Run the ``dfloat11`` package's own encoder (v0.5.0) on CPU, for weights_dfloat11.py to compare against.

Runs in a throwaway virtual environment that has ``dfloat11`` (``--no-deps``), ``dahuffman==0.4.2``, ``tqdm``,
``numpy`` and torch; never in the project's. ``import dfloat11`` cannot work without a GPU: its main module
imports ``pkg_resources`` and ``cupy`` and loads a CUDA kernel at import time. Its encoder module
``dfloat11_utils.py`` needs neither, so it is loaded from its file path. We call its functions as
``dfloat11.compress_model`` does for one group of weights (one transformer block, or the embedding):
``get_codec`` -> ``get_32bit_codec`` -> ``get_luts`` -> ``encode_weights`` with 8 bytes a thread and 512
threads a block (the package's constants).

Usage: python dfloat11_reference.py GROUPS.pt OUT.npz
GROUPS.pt: ``{group_name: [bf16 tensor, ...]}``. OUT.npz: per group its luts, encoded exponents,
sign_mantissa, output_positions, gaps and split_positions (as numpy arrays), plus ``seconds`` per group.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch


def load_encoder():
    spec = importlib.util.find_spec("dfloat11")
    path = Path(spec.submodule_search_locations[0]) / "dfloat11_utils.py"
    module_spec = importlib.util.spec_from_file_location("dfloat11_utils", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def main(groups_file: str, out_file: str) -> None:
    utils = load_encoder()
    groups = torch.load(groups_file)
    arrays: dict[str, np.ndarray] = {}
    for name, weights in groups.items():
        weights = [w.flatten() for w in weights]  # compress_model flattens each weight too
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            _, counter = utils.get_codec(torch.cat(weights))
            codec, _, table = utils.get_32bit_codec(counter)
            luts = utils.get_luts(table)
            encoded, other, positions, gaps, splits = utils.encode_weights(weights, codec, 8, 512)
        arrays[f"{name}/seconds"] = np.array(time.perf_counter() - start)
        arrays[f"{name}/luts"] = luts.numpy()
        arrays[f"{name}/encoded_exponent"] = encoded.numpy()
        arrays[f"{name}/sign_mantissa"] = other.numpy()
        arrays[f"{name}/output_positions"] = positions.numpy()
        arrays[f"{name}/gaps"] = gaps.numpy()
        arrays[f"{name}/split_positions"] = splits.numpy()
        arrays[f"{name}/max_code_length"] = np.array(max(bits for bits, _ in table.values()))
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    np.savez(out_file, **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
