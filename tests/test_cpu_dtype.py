"""The slow-bf16 warning: when torch has no oneDNN bf16 path on this CPU, loading in bf16 says so in one line."""

from __future__ import annotations

import warnings

import pytest
import torch

from longreach import cli
from longreach.errors import LongreachWarning
from longreach.models import cpu, load_model

REAL_FAST_BF16 = cpu.fast_bf16  # taken at import, before conftest's autouse fixture replaces it for every test


def test_fast_bf16_is_torchs_own_answer():
    assert REAL_FAST_BF16() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@pytest.mark.parametrize(
    ("flags", "fast"),
    [
        ({"avx", "avx2", "fma"}, False),  # AMD EPYC (Zen 2/3): AVX2 only
        ({"avx2", "avx512f", "avx512bw", "avx512_bf16"}, True),
        ({"avx2", "amx_tile", "amx_bf16"}, True),
        (set(), True),  # nothing known: no warning
    ],
)
def test_the_flags_decide_where_torch_cannot(flags, fast):
    assert cpu.bf16_fast_by_flags(flags) is fast


def test_loading_in_bf16_warns_on_a_cpu_without_fast_bf16(monkeypatch):
    monkeypatch.setattr(cpu, "fast_bf16", lambda: False)
    with pytest.warns(LongreachWarning, match=r"no AVX-512/AMX.*--dtype fp32 is faster here"):
        load_model("tiny-llama", "bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LongreachWarning)
        load_model("tiny-llama", "fp32")  # fp32 is the fast dtype: no warning


def test_no_warning_where_bf16_is_fast():
    with warnings.catch_warnings():
        warnings.simplefilter("error", LongreachWarning)
        load_model("tiny-llama", "bf16")  # conftest: this CPU has fast bf16


def test_the_cli_prints_the_warning_as_one_line_once(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cpu, "fast_bf16", lambda: False)
    monkeypatch.setattr(cli, "_WARNED", set())
    out = tmp_path / "run"
    args = ["eval", "--model", "tiny-llama", "--task", "passkey", "--lengths", "256", "--depths", "0.5", "--out"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*args, str(out)])
    assert exit_info.value.code == 0
    with pytest.raises(SystemExit):
        cli.main([*args, str(tmp_path / "again")])  # a second load in the same process: not said again
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(lines) == 1
    assert lines[0].startswith("longreach: warning: this CPU has no AVX-512/AMX")
