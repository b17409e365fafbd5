"""SmolLM2-135M in DFloat11 form: about 2/3 of the bfloat16 size, bit-identical logits."""

import pytest
import torch

from longreach.models import load_model
from longreach.weights.model import write_compressed

pytestmark = pytest.mark.slow


def test_compressed_smollm2_gives_bit_identical_logits(tmp_path):
    reference = load_model("smollm2-135m")  # bfloat16, from the GGUF (the one slow step)
    summary = write_compressed(reference, tmp_path / "smollm2")
    assert summary.ratio < 0.70, summary
    restored = load_model(str(tmp_path / "smollm2"))
    ids = reference.tokenizer("Lossless compression keeps every bit of the weights:", return_tensors="pt").input_ids
    with torch.no_grad():
        expected, actual = reference.model(ids).logits, restored.model(ids).logits
    assert torch.equal(expected.view(torch.int16), actual.view(torch.int16))
