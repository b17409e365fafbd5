"""Brute-force oracles over prompt text: each recomputes a family's gold answer from ``sample.prompt`` alone.

They parse the sentences the model reads and never look at the generator's state, its ``meta`` or its gold.
Used by ``test_task_oracles.py`` (gold == oracle) and ``test_random_baselines.py`` (what a guess can see).
"""

import datetime
import re
from collections import Counter

_MONTHNAMES = "January February March April May June July August September October November December"
_MONTHS = {month: k for k, month in enumerate(_MONTHNAMES.split(), start=1)}


def _question(prompt: str, marker: str) -> str:
    """The prompt from the last ``marker`` on (the question, after the haystack)."""
    return prompt[prompt.rindex(marker) :]


def check_passkey(prompt: str) -> tuple[str, ...]:
    found = re.findall(r"The pass key is (\d+)\. Remember it\. (\d+) is the pass key\.", prompt)
    assert len(found) == 1 and found[0][0] == found[0][1]
    return (found[0][0],)


def check_needle(prompt: str) -> tuple[str, ...]:
    question = _question(prompt, "\nWhat ")
    kind, keys = re.search(r"special magic (\w+) for (.+?) mentioned in the provided text\?", question).groups()
    kind = kind if kind.endswith("s") else kind + "s"
    keys = keys.replace(", and ", ", ").split(", ")
    haystack = prompt[: prompt.rindex("\nWhat ")]
    values = []
    for key in keys:
        found = re.findall(rf"One of the special magic {kind} for {re.escape(key)} is: ([0-9A-Za-z-]+)\.", haystack)
        assert found, f"no needle for {key}"
        values.append(sorted(found))  # the values of one key, in any order
    return tuple(v for group in values for v in group)


def check_threading(prompt: str) -> tuple[str, ...]:
    body = prompt[: prompt.rindex("\n}\n")]
    pairs = re.findall(r'"([^"\n]+)": "([^"\n]+)",', body)
    table = dict(pairs)
    assert len(table) == len(pairs), "keys are unique"
    question = prompt[prompt.rindex("\n}\n") :]
    quoted = re.findall(r'"([0-9a-f-]{36})"', question)
    if "contain the character" in question:
        marker = re.search(r'contain the character "(.)"', question).group(1)
        return tuple(sorted(v for k, v in table.items() if marker in k))
    if "Starting from the given key" not in question:
        return tuple(table[k] for k in quoted)
    finals = []
    for key in quoted:
        value, hops = table[key], 1
        while value in table:
            value, hops = table[value], hops + 1
            assert hops < 100
        finals.append(value)
    return tuple(finals)


def variable_chains(prompt: str) -> dict[str, tuple[str, ...]]:
    """Value -> the variables of the real text (after the one-shot example) that end up holding it, in the
    order they are assigned, by following every ``VAR B = VAR A`` link until nothing changes."""
    text = prompt.split("Now the real text.")[-1]
    bound = dict(re.findall(r"VAR ([A-Z]+) = (\d+)\.", text))
    links = re.findall(r"VAR ([A-Z]+) = VAR ([A-Z]+)\.", text)
    changed = True
    while changed:
        changed = False
        for target, source in links:
            if source in bound and target not in bound:
                bound[target], changed = bound[source], True
    chains: dict[str, tuple[str, ...]] = {}
    for name in dict.fromkeys(re.findall(r"VAR ([A-Z]+) =", text)):
        chains[bound[name]] = (*chains.get(bound[name], ()), name)
    return chains


def check_variables(prompt: str) -> tuple[str, ...]:
    question = prompt.split("Now the real text.")[-1]
    value = re.search(r"Find all variables that are assigned the value (\d+) in the text above", question).group(1)
    return variable_chains(prompt)[value]


def check_aggregation(prompt: str) -> tuple[str, ...]:
    body, question = prompt.split("\nQuestion: ")
    words = [w for w in body.split("\n", 1)[1].split() if w != "...."]
    ranked = Counter(words).most_common()
    if "coded text" in question:
        top = 3
    else:
        top = int(re.search(r"What are the (\d+) most common words", question).group(1))
    assert len(ranked) <= top or ranked[top - 1][1] > ranked[top][1], "a strict gap after the top words"
    return tuple(sorted(w for w, _ in ranked[:top]))


_FACTS = {  # attribute -> the sentence shapes of the three styles ({n}: the person's name)
    "birthdate": (
        r"{n} was born on ([A-Z][a-z]+ \d+, \d{{4}})\.",
        r"The birthday of {n} falls on ([^.]+)\.",
        r"I was born on ([^.]+)\.",
    ),
    "birthplace": (
        r"{n} was born in ([A-Z][a-z]+)\.",
        r"{n} came into the world in ([^.]+)\.",
        r"My birthplace is ([^.]+)\.",
    ),
    "university": (r"{n} graduated from ([^.]+)\.", r"{n} earned a degree at ([^.]+)\.", r"I graduated from ([^.]+)\."),
    "major": (r"{n} majored in ([^.]+)\.", r"The field {n} studied was ([^.]+)\.", r"My major was ([^.]+)\."),
    "work_city": (r"{n} works in ([^.]+)\.", r"These days {n} earns a living in ([^.]+)\.", r"I work in ([^.]+)\."),
    "hobby": (r"The hobby of {n} is ([^.]+)\.", r"In spare hours {n} enjoys ([^.]+)\.", r"My hobby is ([^.]+)\."),
}
_NOUNS = {"work city": "work_city", **{a: a for a in ("birthplace", "university", "major", "hobby")}}
NAME = r"[A-Z][a-z]+ [A-Z]\. [A-Z][a-z]+"


def _bios(prompt: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Person -> (bio id or "", the attributes their bio states)."""
    found = {}
    pattern = rf"(?:Bio \[(\d{{4}})\]: )?Below is the (?:bio|self-introduction) of ({NAME})\. (.*?)(?=\n|$)"
    for bio_id, name, body in re.findall(pattern, prompt.split("\n\nQuestion: ")[0]):
        if not body.endswith("This is the end of this bio."):
            continue  # the haystack's last bio may be cut short
        facts = {}
        for attribute, shapes in _FACTS.items():
            for shape in shapes:
                match = re.search(shape.format(n=re.escape(name)), body)
                if match:
                    facts[attribute] = match.group(1)
        assert name not in found
        found[name] = (bio_id, facts)
    return found


def _date(text: str) -> tuple[int, int, int]:
    month, day, year = re.fullmatch(r"([A-Z][a-z]+) (\d+), (\d{4})", text).groups()
    return int(year), _MONTHS[month], int(day)


def check_biographies(prompt: str) -> tuple[str, ...]:
    bios = _bios(prompt)
    question = _question(prompt, "\n\nQuestion: ")
    names = re.findall(NAME, question)
    born = {name: _date(bios[name][1]["birthdate"]) for name in names if "birthdate" in bios[name][1]}
    asked = re.search(r"What (?:is|are) the (birthplace|university|major|work city|hobby)", question)
    if "does not state it" in question:
        assert _NOUNS[asked.group(1)] not in bios[names[0]][1], "the target's bio leaves the fact out"
        return ("not stated",)
    if asked and "in this order" in question:
        return tuple(bios[name][1][_NOUNS[asked.group(1)]] for name in names)
    if asked:
        value = bios[names[0]][1][_NOUNS[asked.group(1)]]
        return (value, bios[names[0]][0]) if "cite the bio" in question else (value,)
    if "How many years apart" in question:
        return (str(abs(born[names[0]][0] - born[names[1]][0])),)
    if "Who was born earlier" in question:
        return (min(names, key=born.__getitem__),)
    assert "from the earliest born to the latest born" in question
    return tuple(sorted(names, key=born.__getitem__))


_WINES = (
    r"The wine (?P<name>Chateau \w+) is made from (?P<grape>\w+) grapes grown in (?P<region>\w+); it was bottled "
    r"in (?P<year>\d+) and sells for (?P<price>\d+) dollars\.",
    r"(?P<name>Chateau \w+), a (?P<year>\d+) vintage from (?P<region>\w+), is pressed from (?P<grape>\w+) grapes "
    r"and costs (?P<price>\d+) dollars\.",
    r"Priced at (?P<price>\d+) dollars, (?P<name>Chateau \w+) comes from (?P<region>\w+) and was made from "
    r"(?P<grape>\w+) grapes in (?P<year>\d+)\.",
)
_GRAPES = (
    r"The (?P<grape>\w+) grape has (?P<color>\w+) skin\.",
    r"(?P<grape>\w+) is a grape with (?P<color>\w+) skin\.",
)


def check_database(prompt: str) -> tuple[str, ...]:
    records, question = prompt.split("\n\nQuestion: ")
    wines, colors = [], {}
    for line in records.splitlines():
        for shape in _WINES:
            if match := re.fullmatch(shape, line):
                wines.append({**match.groupdict(), "price": int(match["price"])})
        for shape in _GRAPES:
            if match := re.fullmatch(shape, line):
                colors[match["grape"]] = match["color"]
    if match := re.match(r"Which wines cost more than (\d+) dollars\?", question):
        return tuple(sorted(w["name"] for w in wines if w["price"] > int(match.group(1))))
    if match := re.match(r"How many wines come from (\w+)\?", question):
        return (str(sum(w["region"] == match.group(1) for w in wines)),)
    if match := re.match(r"Which wine is the (most|least) expensive\?", question):
        pick = max if match.group(1) == "most" else min
        return (pick(wines, key=lambda w: w["price"])["name"],)
    if question.startswith("How many wines come from each region?"):
        counts = Counter(w["region"] for w in wines)
        return tuple(f"{region}: {counts[region]}" for region in sorted(counts))
    color = re.match(r"Which wines are made from a grape with (\w+) skin\?", question).group(1)
    return tuple(sorted(w["name"] for w in wines if colors[w["grape"]] == color))


def check_ordering(prompt: str) -> tuple[str, ...]:
    log = prompt.split("\n\nThe segments above")[0]
    starts = {}
    segment = r"\[(\d+)\] The caravan set out from (\w+) at first light\.(.*?)(?=\n\[|$)"
    for label, city, rest in re.findall(segment, log, flags=re.DOTALL):
        ends = re.findall(r"By nightfall the caravan had reached (\w+)\.", rest)
        assert len(ends) == 1
        starts[city] = (label, ends[0])
    first = [city for city in starts if city not in {end for _, end in starts.values()}]
    assert len(first) == 1
    order, city = [], first[0]
    while city in starts:
        label, city = starts[city]
        order.append(label)
    assert len(order) == len(starts)
    return tuple(order)


def check_confusers(prompt: str) -> tuple[str, ...]:
    question = _question(prompt, "\nQuestion: ")
    shape = r"Question: (In what year was|Who founded|On which river was) the town of (\w+)"
    asked, town = re.search(shape, question).groups()
    statements = re.findall(
        r"The town of (\w+) was founded in (\d{4}) by (.+?) on the banks of the (\w+) river\.", prompt
    )
    about = [s for s in statements if s[0] == town]
    if not about:
        return ("not stated",)
    assert len(about) == 1
    return ({"In what year was": about[0][1], "Who founded": about[0][2], "On which river was": about[0][3]}[asked],)


def check_golden_thread(prompt: str) -> tuple[str, ...]:
    label = "Week" if "one entry per week" in prompt else "Floor"
    last = int(re.search(r"for (?:weeks|floors) 1 to (\d+)\.", prompt).group(1))
    checks = set()
    for month, day, event in re.findall(r"On ([A-Z][a-z]+) (\d+), 2018, write about a day of ([^.]+)\.", prompt):
        days = (datetime.date(2018, _MONTHS[month], int(day)) - datetime.date(2018, 1, 1)).days
        checks.add((days // 7 + 1, event))
    checks |= {(int(k), event) for k, event in re.findall(r"Floor (\d+) houses a (.+?) studio\.", prompt)}
    for start, end, event in re.findall(r"In (?:weeks|floors) (\d+) to (\d+), every entry mentions ([^.]+)\.", prompt):
        checks |= {(k, event) for k in range(int(start), int(end) + 1)}
    for period, start, event in re.findall(
        r"Every (\d+) (?:weeks|floors), starting from (?:week|floor) (\d+), include ([^.]+)\.", prompt
    ):
        checks |= {(k, event) for k in range(int(start), last + 1, int(period))}
    assert all(1 <= k <= last for k, _ in checks)
    return tuple(sorted(f"{label} {k}: {event}" for k, event in checks))


_PROBLEMS = (  # the word problems' shapes -> their answer
    (r"(\w+) has (\d+) (\w+)\. \1 buys (\d+) more and then gives (\d+) away\.", lambda g: g[1] + g[3] - g[4]),
    (r"A box holds (\d+) (\w+)\. (\w+) fills (\d+) boxes and then gives away (\d+) \2\.", lambda g: g[0] * g[3] - g[4]),
    (r"(\w+) collects (\d+) (\w+) every day for (\d+) days and already had (\d+)\.", lambda g: g[1] * g[3] + g[4]),
    (
        r"(\w+) had (\d+) (\w+) and lost (\d+) of them\. Then \1 (doubles|triples) what is left\.",
        lambda g: (g[1] - g[3]) * (2 if g[4] == "doubles" else 3),
    ),
)


def solve_problem(text: str) -> int:
    for shape, answer in _PROBLEMS:
        if match := re.match(shape, text):
            return answer([int(x) if x.isdigit() else x for x in match.groups()])
    raise AssertionError(f"not a known problem: {text!r}")


def check_longgenbench(prompt: str) -> tuple[str, ...]:
    asked = prompt.split("\n\nFollowing questions:\n")[1]
    questions = re.findall(r"^Question_(\d+): (.+)$", asked, flags=re.MULTILINE)
    assert [int(k) for k, _ in questions] == list(range(1, len(questions) + 1))
    return tuple(str(solve_problem(text)) for _, text in questions)


CANDIDATE = r"^Answer (A\d{5}): (.*?answer is (-?\d+)\.)$"


def check_bestanswer(prompt: str) -> tuple[str, ...]:
    gold = solve_problem(re.search(r"^Question: (.+)$", prompt, flags=re.MULTILINE).group(1))
    right = []
    for label, body, stated in re.findall(CANDIDATE, prompt, flags=re.MULTILINE):
        steps = [(int(a), op, int(b), int(c)) for a, op, b, c in re.findall(r"(-?\d+) ([-+*]) (\d+) = (-?\d+)", body)]
        computed = all(c == {"+": a + b, "-": a - b, "*": a * b}[op] for a, op, b, c in steps)
        chained = steps[1][0] == steps[0][3]
        if computed and chained and int(stated) == steps[-1][3] == gold:
            right.append(label)
    assert len(right) == 1, right
    return tuple(right)


EXAM_QUESTION = r"^(?:Instruction: (.+?) )?Input: (.+) Answer: (.+) \(question (\d{5})\)$"
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()


def _grade(instruction: str, given: str) -> str:
    numbers = [int(x) for x in re.findall(r"\d+", given)]
    if instruction.startswith("Add"):
        return str(sum(numbers))
    if instruction.startswith("Write the word backwards"):
        return given[::-1]
    if instruction.startswith("Sort"):
        return ", ".join(map(str, sorted(numbers)))
    if instruction.startswith("Name the day"):
        return _DAYS[(_DAYS.index(given.split()[-1]) + numbers[0]) % 7]
    assert instruction.startswith("Give the largest")
    return str(max(numbers))


def check_longins(prompt: str) -> tuple[str, ...]:
    shared = re.search(r"The requirements for these questions are as follows: (.+)$", prompt, flags=re.MULTILINE)
    wrong = []
    for instruction, given, answer, number in re.findall(EXAM_QUESTION, prompt, flags=re.MULTILINE):
        if _grade(instruction or shared.group(1), given) != answer:
            wrong.append(number)
    return tuple(sorted(wrong))


CHECKERS = {
    "passkey": (check_passkey, "ordered"),
    "needle": (check_needle, "multiset"),
    "threading": (check_threading, "set"),
    "variables": (check_variables, "ordered"),
    "aggregation": (check_aggregation, "set"),
    "biographies": (check_biographies, "ordered"),
    "database": (check_database, "ordered"),
    "ordering": (check_ordering, "ordered"),
    "confusers": (check_confusers, "ordered"),
    "golden_thread": (check_golden_thread, "set"),
    "longgenbench": (check_longgenbench, "ordered"),
    "bestanswer": (check_bestanswer, "ordered"),
    "longins": (check_longins, "ordered"),
}
