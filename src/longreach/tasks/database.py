"""Database operations over text (Maekawa et al. 2025, HoloBench, ``holobench/load_context.py``).

Generated records of two related tables, ``wines(name, grape, region, year, price)`` and
``grapes(grape, color)``, are written as sentences (one of several templates per row) and spread through a
haystack of sentences about an unrelated table (ships). ``query`` is one of ``filter`` (names matching a
condition), ``count``, ``max`` / ``min`` (the name with the highest / lowest price), ``group`` (rows per
region) and ``join`` (wines whose grape has a given color). The gold answer is computed by SQLite from
exactly the rows in the prompt. ``num_rows`` (the information amount) is independent of the length, and
``merge`` places the relevant rows (``uniform``, ``begin``, ``middle``, ``end``, ``bimodal``), as in the paper.

Scores are deterministic (HoloBench uses an LLM judge): F1 over the wine names found in the answer for
``filter`` and ``join``, the last integer for ``count``, exactly the right name for ``max`` / ``min``, and
the fraction of ``region: count`` pairs stated for ``group``. Random baseline: naming every wine (list
queries), or a uniform guess among the possible answers.
"""

from __future__ import annotations

import random
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import fitting, rng, scoring, words
from longreach.tasks.base import Level, Sample, Task, register_family
from longreach.tasks.filler import drawn_units

Query = Literal["filter", "count", "max", "min", "group", "join"]
Merge = Literal["uniform", "begin", "middle", "end", "bimodal"]

_WINE = (
    "The wine {name} is made from {grape} grapes grown in {region}; it was bottled in {year} and sells for "
    "{price} dollars.",
    "{name}, a {year} vintage from {region}, is pressed from {grape} grapes and costs {price} dollars.",
    "Priced at {price} dollars, {name} comes from {region} and was made from {grape} grapes in {year}.",
)
_GRAPE = ("The {grape} grape has {color} skin.", "{grape} is a grape with {color} skin.")
_SHIP = (
    "The ship {name} sails from {port}, carries {tonnage} tonnes and was launched in {year}.",
    "Launched in {year}, the vessel {name} is based in {port} and carries {tonnage} tonnes.",
)


def _title(r: random.Random) -> str:
    return words.pseudo_word(r).capitalize()


@register_family
@dataclass(frozen=True)
class Database(Task):
    """Answer a SQL-like question over records written as sentences among unrelated records."""

    query: Query = field(default="filter", metadata={"help": "filter | count | max | min | group | join"})
    num_rows: int = field(default=8, metadata={"help": "relevant wine rows in the prompt (information amount)"})
    num_grapes: int = field(default=3, metadata={"help": "grape rows (the joined table)"})
    merge: Merge = field(
        default="uniform", metadata={"help": "where relevant rows go: uniform | begin | middle | end | bimodal"}
    )
    max_new_tokens: int = field(default=96, metadata={"help": "generation budget"})

    family: ClassVar[str] = "database"
    summary: ClassVar[str] = "HoloBench: filter / count / max / min / group / join over records written as sentences"
    uses_depth: ClassVar[bool] = False
    diffusion: ClassVar[Level] = "high"  # relevant rows are written in varied templates among unrelated records
    scope: ClassVar[Level] = "high"  # every relevant row enters the answer

    def __post_init__(self) -> None:
        require(2 <= self.num_rows <= 500, f"database: num_rows must be in 2..500; got {self.num_rows}")
        require(2 <= self.num_grapes <= 20, f"database: num_grapes must be in 2..20; got {self.num_grapes}")
        require(self.max_new_tokens >= 1, f"database: max_new_tokens must be >= 1; got {self.max_new_tokens}")

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        name = f"database/{self.query}/{self.num_rows}/{self.num_grapes}"
        probe = rng.stream(seed, name, "probe", index)
        filler_rng = rng.stream(seed, name, "filler", context_length, index)
        taken: set[str] = set()
        grapes = [
            (g, "red" if k % 2 == 0 else "white")
            for k, g in enumerate(words.unique(probe, _title, self.num_grapes, taken))
        ]
        regions = probe.sample(words.word_list("cities"), 3)
        prices = probe.sample(range(8, 400), self.num_rows)
        wines = [
            (f"Chateau {n}", probe.choice(grapes)[0], probe.choice(regions), probe.randint(1990, 2023), price)
            for n, price in zip(words.unique(probe, _title, self.num_rows, taken), prices, strict=True)
        ]
        sql, params, question, kind = self._query(probe, wines, grapes, regions)
        gold = _execute(wines, grapes, sql, params)
        answers = [f"{r[0]}: {r[1]}" for r in gold] if kind == "group" else [str(r[0]) for r in gold]
        rows = [probe.choice(_WINE).format(name=w[0], grape=w[1], region=w[2], year=w[3], price=w[4]) for w in wines]
        rows += [probe.choice(_GRAPE).format(grape=g, color=c) for g, c in grapes]
        probe.shuffle(rows)
        needles = [fitting.Needle(text, d) for text, d in zip(rows, self._depths(probe, len(rows)), strict=True)]

        def ship() -> str:
            return filler_rng.choice(_SHIP).format(
                name=f"{words.unique(filler_rng, _title, 1, taken)[0]}",
                port=filler_rng.choice(words.word_list("cities")),
                tonnage=filler_rng.randint(500, 90000),
                year=filler_rng.randint(1950, 2023),
            )

        fitted = fitting.fit_haystack(
            tokenizer,
            context_length,
            head="You will be given a set of sentences, each stating one record of a database table.\n\n",
            question=question,
            answer_prefix="\nAnswer:",
            frame=frame,
            needles=needles,
            unit=drawn_units(ship),
            sep="\n",
            needle_sep="\n",
        )
        all_wines = [w[0] for w in wines]
        return Sample.from_fit(
            fitted,
            task=self.family,
            answers=tuple(answers),
            max_new_tokens=self.max_new_tokens,
            stop=("\n\n",),
            query=self.query,
            sql=sql,
            sql_params=list(params),
            wines=all_wines,
            random_baseline=round(self._baseline(len(answers)), 6),
        )

    def _query(
        self, probe: random.Random, wines: list[tuple], grapes: list[tuple[str, str]], regions: list[str]
    ) -> tuple[str, tuple, str, str]:
        """(SQL, parameters, the question in words, answer kind); the answer prefix is a line ``Answer:``."""
        ask = "\n\nQuestion: "
        if self.query == "filter":
            prices = sorted(w[4] for w in wines)
            limit = prices[len(prices) * 2 // 3 - 1]
            text = f"Which wines cost more than {limit} dollars? Answer with their names, separated by commas."
            return "SELECT name FROM wines WHERE price > ? ORDER BY name", (limit,), f"{ask}{text}", "list"
        if self.query == "count":
            region = probe.choice(sorted({w[2] for w in wines}))
            text = f"How many wines come from {region}? Answer with a number."
            return "SELECT COUNT(*) FROM wines WHERE region = ?", (region,), f"{ask}{text}", "count"
        if self.query in ("max", "min"):
            word, order = ("most", "DESC") if self.query == "max" else ("least", "ASC")
            text = f"Which wine is the {word} expensive? Answer with its name."
            return f"SELECT name FROM wines ORDER BY price {order} LIMIT 1", (), f"{ask}{text}", "one"
        if self.query == "group":
            text = "How many wines come from each region? Answer with one 'region: count' pair per region."
            sql = "SELECT region, COUNT(*) FROM wines GROUP BY region ORDER BY region"
            return sql, (), f"{ask}{text}", "group"
        colors = dict(grapes)
        color = probe.choice(sorted({colors[w[1]] for w in wines}))  # at least one wine has a grape of it
        text = f"Which wines are made from a grape with {color} skin? Answer with their names, separated by commas."
        sql = "SELECT w.name FROM wines w JOIN grapes g ON w.grape = g.grape WHERE g.color = ? ORDER BY w.name"
        return sql, (color,), f"{ask}{text}", "list"

    def _depths(self, probe: random.Random, count: int) -> list[float]:
        if self.merge == "uniform":
            return [round((k + 0.5) / count, 4) for k in range(count)]
        spans = {
            "begin": [(0.0, 0.1)],
            "middle": [(0.45, 0.55)],
            "end": [(0.9, 1.0)],
            "bimodal": [(0.0, 0.1), (0.9, 1.0)],
        }
        chosen = spans[self.merge]
        return sorted(round(probe.uniform(*chosen[k % len(chosen)]), 4) for k in range(count))

    def _baseline(self, gold: int) -> float:
        if self.query in ("filter", "join"):
            return 2 * gold / (gold + self.num_rows) if gold else 0.0
        if self.query in ("max", "min"):
            return 1 / self.num_rows
        return 1 / (self.num_rows + 1)

    def score(self, sample: Sample, prediction: str) -> float:
        answers = sample.answers
        if self.query in ("filter", "join"):
            return scoring.f1(scoring.found(sample.meta["wines"], prediction), set(answers))
        if self.query == "count":
            return float(scoring.last_integer(prediction) == int(answers[0]))
        if self.query in ("max", "min"):
            return float(scoring.found(sample.meta["wines"], prediction) == {answers[0]})
        text = scoring.clean(prediction)
        hits = 0
        for pair in answers:
            region, count = pair.rsplit(": ", 1)
            pattern = r"(?<![0-9A-Za-z])" + re.escape(region) + r"\W{1,5}" + count + r"(?!\d)"
            hits += re.search(pattern, text, flags=re.IGNORECASE) is not None
        return hits / len(answers)


def _execute(wines: list[tuple], grapes: list[tuple[str, str]], sql: str, params: tuple) -> list[tuple]:
    """Run the query in an in-memory SQLite database holding exactly the rows in the prompt."""
    with sqlite3.connect(":memory:") as db:
        db.execute("CREATE TABLE wines (name TEXT, grape TEXT, region TEXT, year INTEGER, price INTEGER)")
        db.execute("CREATE TABLE grapes (grape TEXT, color TEXT)")
        db.executemany("INSERT INTO wines VALUES (?, ?, ?, ?, ?)", wines)
        db.executemany("INSERT INTO grapes VALUES (?, ?)", grapes)
        rows = db.execute(sql, params).fetchall()
    return rows
