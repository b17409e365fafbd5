"""Needle threading over a key-value haystack (Roberts, Han & Albanie 2024, "Needle Threading", ICLR'25).

The haystack is a JSON object of UUID keys and UUID values, one pair a line. Modes:

- ``single``: the value of one given key; ``multiple``: the values of ``num_needles`` given keys;
- ``conditional``: the values of every key that contains ``marker`` (no key is given; ``num_needles`` keys
  carry the marker, and no value contains it);
- ``thread``: a value is itself a key elsewhere; follow ``thread_length`` hops from the given start key
  and return the last value; ``multi_thread``: ``num_threads`` threads at once, one final value each.

``direction`` orders a thread's pairs in the text: ``forward`` (each next hop later), ``backward`` (each
next hop earlier) or ``random``. The requested depth places the pair that holds the (first) answer; other
needles sit at depths from the sample's probe stream. Score: F1 between the UUIDs in the prediction and
the gold values, so listing every UUID seen is not rewarded (the paper scores exact matches per value).
Deviations: the length is exact in tokens (the paper sized haystacks in characters) and the last filler
pair may be cut short to hit it, so the object is JSON-like rather than strictly valid JSON.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import fitting, rng, scoring, words
from longreach.tasks.base import Level, Sample, Task, register_family
from longreach.tasks.filler import drawn_units

Mode = Literal["single", "multiple", "conditional", "thread", "multi_thread"]
Direction = Literal["forward", "backward", "random"]
_UUID = re.compile(
    r"(?<![0-9a-fA-F-])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![0-9a-fA-F-])"
)


def _pair(key: str, value: str) -> str:
    return f'"{key}": "{value}",'


@register_family
@dataclass(frozen=True)
class Threading(Task):
    """Retrieve values, or follow chains of keys, in a haystack of UUID pairs."""

    mode: Mode = field(default="single", metadata={"help": "single | multiple | conditional | thread | multi_thread"})
    num_needles: int = field(default=4, metadata={"help": "keys asked for (multiple) or marked (conditional)"})
    thread_length: int = field(default=3, metadata={"help": "hops in a thread"})
    num_threads: int = field(default=2, metadata={"help": "threads followed at once (multi_thread)"})
    direction: Direction = field(default="forward", metadata={"help": "forward | backward | random"})
    marker: str = field(default="*", metadata={"help": "the character in the keys of conditional needles"})
    max_new_tokens: int = field(default=0, metadata={"help": "generation budget (0: 24 per expected value + 8)"})

    family: ClassVar[str] = "threading"
    summary: ClassVar[str] = "Needle Threading: single, multiple, conditional needles and threads over UUID pairs"
    diffusion: ClassVar[Level] = "high"  # each hop is a UUID among look-alike pairs, reached by following a value
    scope: ClassVar[Level] = "low"  # one to a few final values

    def __post_init__(self) -> None:
        require(1 <= self.num_needles <= 64, f"threading: num_needles must be in 1..64; got {self.num_needles}")
        require(1 <= self.thread_length <= 32, f"threading: thread_length must be in 1..32; got {self.thread_length}")
        require(1 <= self.num_threads <= 16, f"threading: num_threads must be in 1..16; got {self.num_threads}")
        require(
            len(self.marker) == 1 and not self.marker.isalnum() and self.marker not in '"-\\',
            f"threading: marker must be one non-alphanumeric character other than '\"', '-', '\\\\'; "
            f"got {self.marker!r}",
        )
        require(self.max_new_tokens >= 0, f"threading: max_new_tokens must be >= 0; got {self.max_new_tokens}")

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        name = f"threading/{self.mode}/{self.num_needles}/{self.thread_length}/{self.num_threads}/{self.direction}"
        probe = rng.stream(seed, name, "probe", depth, index)
        filler_rng = rng.stream(seed, name, "filler", context_length, depth, index)
        needles, answers, start_keys = self._needles(probe, depth)
        question, answer_prefix = self._question(start_keys)
        fitted = fitting.fit_haystack(
            tokenizer,
            context_length,
            head="Below is a JSON object of key-value pairs.\n{\n",
            question=question,
            answer_prefix=answer_prefix,
            frame=frame,
            needles=needles,
            unit=drawn_units(lambda: _pair(words.uuid4(filler_rng), words.uuid4(filler_rng))),
            sep="\n",
            needle_sep="\n",
        )
        pairs = fitted.filler_units + len(needles)
        return Sample.from_fit(
            fitted,
            task=self.family,
            answers=tuple(answers),
            max_new_tokens=self.max_new_tokens or 24 * len(answers) + 8,
            stop=("\n\n",),
            mode=self.mode,
            start_keys=start_keys,
            pairs=pairs,
            random_baseline=round(min(1.0, len(answers) / pairs), 6),
        )

    def _needles(self, probe: random.Random, depth: float) -> tuple[list[fitting.Needle], list[str], list[str]]:
        taken: set[str] = set()
        if self.mode in ("single", "multiple", "conditional"):
            count = 1 if self.mode == "single" else self.num_needles
            keys = words.unique_values(probe, "uuids", count, taken)
            values = words.unique_values(probe, "uuids", count, taken)
            if self.mode == "conditional":
                keys = [self._mark(probe, key) for key in keys]
            depths = [depth] + [round(probe.random(), 4) for _ in keys[1:]]
            needles = [fitting.Needle(_pair(k, v), d) for k, v, d in zip(keys, values, depths, strict=True)]
            return needles, values, ([] if self.mode == "conditional" else keys)
        threads = 1 if self.mode == "thread" else self.num_threads
        needles, answers, starts = [], [], []
        for t in range(threads):
            chain = words.unique_values(probe, "uuids", self.thread_length + 1, taken)
            final_depth = depth if t == 0 else round(probe.random(), 4)
            hop_depths = self._hop_depths(probe, final_depth)
            hops = [
                fitting.Needle(_pair(chain[h], chain[h + 1]), hop_depths[h], rank=self._rank(probe, h))
                for h in range(self.thread_length)
            ]
            needles.extend([hops[-1], *hops[:-1]])  # the pair holding the answer first: its offset is recorded
            answers.append(chain[-1])
            starts.append(chain[0])
        return needles, answers, starts

    def _hop_depths(self, probe: random.Random, final: float) -> list[float]:
        """Depth of each hop; the last hop (holding the answer) sits at ``final``."""
        others = [probe.random() for _ in range(self.thread_length - 1)]
        if self.direction == "forward":
            return [round(final * u, 4) for u in sorted(others)] + [final]
        if self.direction == "backward":
            return [round(final + (1 - final) * u, 4) for u in sorted(others, reverse=True)] + [final]
        return [round(u, 4) for u in others] + [final]

    def _rank(self, probe: random.Random, hop: int) -> int:
        """Order of hops that share a slot: forward keeps thread order, backward reverses it."""
        return {"forward": hop, "backward": -hop}.get(self.direction, probe.randint(0, 1000))

    def _mark(self, probe: random.Random, key: str) -> str:
        position = probe.randint(1, len(key) - 1)
        return key[:position] + self.marker + key[position:]

    def _question(self, start_keys: list[str]) -> tuple[str, str]:
        """(the question, closing the JSON object; the answer prefix the model continues from)."""
        quoted = ", ".join(f'"{k}"' for k in start_keys)
        if self.mode == "single":
            body = f"Extract the value corresponding to the specified key in the JSON object above. Key: {quoted}"
            return f"\n}}\n{body}", "\nCorresponding value:"
        if self.mode == "multiple":
            body = f"Extract the values corresponding to the specified keys in the JSON object above. Keys: {quoted}"
            return f"\n}}\n{body}", "\nCorresponding values:"
        if self.mode == "conditional":
            body = (
                f"Extract the values of all keys in the JSON object above that contain the character "
                f'"{self.marker}". List every such value.'
            )
            return f"\n}}\n{body}", "\nValues:"
        rule = (
            "In the JSON object above, a value may also be a key elsewhere in the object. Starting from the "
            "given key, look up its value, use that value as the next key, and continue until the value is not "
            "a key in the object."
        )
        if self.mode == "thread":
            return f"\n}}\n{rule} Start key: {quoted}", "\nFinal value:"
        return f"\n}}\n{rule} Follow one thread from each start key: {quoted}", "\nFinal values, one per thread:"

    def score(self, sample: Sample, prediction: str) -> float:
        predicted = {m.lower() for m in _UUID.findall(scoring.clean(prediction))}
        return scoring.f1(predicted, {a.lower() for a in sample.answers})
