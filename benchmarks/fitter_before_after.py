"""Side by side: the fitter before this change (commit 436982b) and now, passkey at 128K, SmolLM2 tokenizer.

Usage: ``python benchmarks/fitter_before_after.py`` from the repository root (it extracts the old fitter
with ``git show`` into a temporary folder). Prints and writes ``benchmarks/results/fitter_before_after.json``.
"""

import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from longreach.models import load_tokenizer, resolve
from longreach.results.provenance import current as environment
from longreach.tasks import fitting as new_fitting
from longreach.tasks.filler import NOISE

OLD = "436982b"
folder = pathlib.Path(tempfile.mkdtemp())
for name in ("tasks/fitting.py", "tokens.py"):
    text = subprocess.run(["git", "show", f"{OLD}:src/longreach/{name}"], capture_output=True, text=True, check=True)
    source = text.stdout.replace("from longreach import tokens", "import old_tokens as tokens")
    (folder / ("old_fitting.py" if "fitting" in name else "old_tokens.py")).write_text(source)
sys.path.insert(0, str(folder))
import old_fitting  # noqa: E402

tok = load_tokenizer(resolve("smollm2-135m"))
HEAD = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there.\n"
)
Q = "\nWhat is the pass key? The pass key is"
res = {"old": [], "new": []}
for _ in range(3):
    for name, mod in (("old", old_fitting), ("new", new_fitting)):
        t = time.perf_counter()
        needle = mod.Needle("The pass key is 12345. Remember it. 12345 is the pass key.", 0.5)
        f = mod.fit_haystack(
            tok, 131072, head=HEAD, question=Q, needles=[needle], unit=lambda i: NOISE, sep=" ", needle_sep="\n"
        )
        res[name].append(time.perf_counter() - t)
        assert f.realized_tokens == 131072
summary = {k: {"median_s": round(statistics.median(v), 3), "runs": [round(x, 3) for x in v]} for k, v in res.items()}
print(json.dumps(summary))
out = pathlib.Path("benchmarks/results/fitter_before_after.json")
out.write_text(
    json.dumps({"provenance": environment(), "task": "passkey", "context_length": 131072, **summary}, indent=1) + "\n"
)
