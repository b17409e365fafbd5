"""Official benchmark metrics on hand-worked examples (the arithmetic is in the comments)."""

import pytest

from longreach.tasks import metrics as m


def test_qa_f1_normalises_like_longbench():
    # "The cat sat on the mat." -> cat sat on mat (4 tokens); "a cat on a mat" -> cat on mat (3); shared 3:
    # P = 3/4, R = 3/3, F1 = 2 * 0.75 * 1 / 1.75 = 6/7
    assert m.qa_f1("The cat sat on the mat.", "a cat on a mat") == pytest.approx(6 / 7)
    assert m.normalize_answer("  The  U.S.A.,  an Ally!") == "usa ally"
    assert m.normalize_answer("The A-B", lower=False) == "The AB", "L-Eval's exact match keeps the case"
    assert m.qa_f1("", "cat") == 0.0


def test_rouge_l_uses_rouge_score_tokens():
    # [the cat sat on the mat] vs [the cat is on the mat]: LCS "the cat on the mat" = 5; P = R = 5/6, F = 5/6
    assert m.rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # rouge-score lowercases and drops punctuation: [hello world] both (the `rouge` package would give 0 here)
    assert m.rouge_l("Hello, World!", "hello world") == 1.0
    assert m.rouge_l("", "hello world") == 0.0
    # ROUGE-Lsum: sentences at newlines; "a b\nc d" vs "c d\na b": union LCS per reference sentence is 2 + 2 = 4
    # of 4 tokens each side -> 1.0 (plain ROUGE-L: LCS of [a b c d] and [c d a b] = 2, F = 0.5)
    assert m.rouge_lsum("a b\nc d", "c d\na b") == 1.0
    assert m.rouge_l("a b\nc d", "c d\na b") == 0.5


def test_classification_score_and_its_skip():
    classes = ["Human", "Location", "Numeric value", "Entity"]
    # named: Human, Location; gold Human is among them -> 1/2
    assert m.classification("Human or Location", "Human", classes) == 0.5
    assert m.classification("Entity", "Human", classes) == 0.0
    # named [a, ab, abc]; "a" is part of gold "abc" and removed, which makes the loop skip "ab" (LongBench removes
    # while iterating): [ab, abc] remain -> 1/2, where removing every part would give 1.0
    assert m.classification("abc", "abc", ["a", "ab", "abc"]) == 0.5


def test_retrieval_count_and_code_similarity():
    # numbers [3, 12], one equals the gold paragraph 3 -> 1/2
    assert m.retrieval("Paragraph 3, not paragraph 12", "Paragraph 3") == 0.5
    # numbers [4, 7], one equals 4 -> 1/2; no number -> 0
    assert m.count("There are 4 unique paragraphs out of 7", "4") == 0.5
    assert m.count("four", "4") == 0.0
    # the first line without ` # // is the third -> identical -> 1.0
    assert m.code_similarity("```python\n# add\n    return a + b\nx", "    return a + b") == 1.0
    # "x = 1" vs "x = 2": LCS 4 of 5 + 5 characters -> 2 * 4 / 10 = 0.8
    assert m.code_similarity("x = 1", "x = 2") == 0.8
    # "abc" vs "abd": 2 * 2 / 6 = 66.67%, rounded to a whole percent as fuzzywuzzy does -> 0.67
    assert m.code_similarity("abc", "abd") == 0.67


def test_lveval_keyword_gated_f1():
    gold, keywords = "She was born in Harrow Mead.", "Harrow Mead"
    # keywords [harrow, mead]; prediction [it was in town of harrow] recalls harrow: 1/2 >= 0.2, so F1 against
    # gold [she was born in harrow mead]: shared was, in, harrow = 3; P = 3/6, R = 3/6 -> 0.5
    assert m.keyword_gated_f1("It was in the town of Harrow", gold, keywords) == 0.5
    # recall 0 < 0.2 -> 0, although plain F1 would be 2 * (4/5 * 4/6) / (4/5 + 4/6) = 0.727
    assert m.keyword_gated_f1("She was born in the town", gold, keywords) == 0.0
    assert m.qa_f1("She was born in the town", gold) == pytest.approx(8 / 11)
    # blacklisted words are no hits but count in the keywords: "was in" recalls 0/5 -> 0; "Harrow" 1/5 = 0.2 passes,
    # then F1 against [harrow mead lane]: P = 1, R = 1/3 -> 0.5
    assert m.keyword_gated_f1("was in", "Harrow Mead Lane", "was in Harrow Mead Lane") == 0.0
    assert m.keyword_gated_f1("Harrow", "Harrow Mead Lane", "was in Harrow Mead Lane") == 0.5
    assert m.keyword_gated_f1("Harrow", "Harrow Mead Lane", "") == 0.5, "no keywords: plain F1"


def test_longbench_v2_letter():
    assert m.correct_answer_letter("**The correct answer is (C)**") == "C"
    assert m.correct_answer_letter("The correct answer is B.") == "B"
    assert m.correct_answer_letter("I think (A)") is None


def test_infinitebench_scorers():
    assert m.first_integer("The pass key is 71432. Done 5") == "71432"
    assert m.kv_retrieval('The value is: "c14c-8a".', "c14c-8a") == 1.0
    assert m.kv_retrieval("c14c-8ab", "c14c-8a") == 0.0
    assert m.math_find("The answer is 88.", 88) == 1.0
    assert m.math_find("3.5 then 3", 3.5) == 1.0
    assert m.math_find("88.5", 88) == 0.0, "InfiniteBench's int() would raise here; a float is no int answer"
    label = ["Snowfield", "C"]
    assert m.infinite_choice("B. Hall Farm", label) == 0.0, "the first letter decides"
    # no leading letter; "answer is" found, the text after it and one character starts with C
    assert m.infinite_choice("The answer is C", label) == 1.0
    assert m.infinite_choice("I think it is a trap, so C", label) == 1.0, "the first word that is a letter"
    assert m.infinite_choice("Snowfield", label) == 1.0
    assert m.code_debug("C. cmd_gen", ["cmd_gen", "C"]) == 1.0
    assert m.code_debug("The correct answer is:\n\nD. _parser", ["_parser", "D"]) == 1.0
    assert m.code_debug("Answer: B", ["f", "D"]) == 0.0


def test_leval_closed_ended_parsing():
    assert m.leval_option(" B", multiple=False) == "B"
    assert m.leval_option("AC are correct", multiple=True) == "AC"
    # no leading letters; capitals followed by a space or "." are A and C -> "AC"
    assert m.leval_option("The options A and C.", multiple=True) == "AC"
    assert m.leval_option("", multiple=False) == "None"
    assert m.leval_option("no idea", multiple=False) == "A", "L-Eval's fallback guess"
    assert m.leval_gold_option("(B) Their subconscious") == "B"
    assert m.leval_exact_match("AC", "AC") == 1.0
    assert m.leval_exact_match("AC", "ABC") == 0.25, "a proper subset of several correct options"
    assert m.leval_exact_match("D", "ABC") == 0.0
    assert m.leval_exact_match("5", "5.0") == 1.0, "numbers compare as numbers"
    assert m.leval_exact_match("the topic is Lighthouse Keeping", "lighthouse keeping") == 1.0
    assert m.leval_number("10 - 4 = 6. The answer is 6.") == "6"
    assert m.leval_number("So it is 12.5 apples") == "12", "the last word with a digit, up to the point"
    assert m.leval_code_gold("[1, 2.0, 'a']") == "[1 2 a]"
    # "will be" removed, then the last 1 + 3 words: "The output 42"; the gold is contained -> 1
    assert m.leval_code_output("The output will be 42", "42") == "The output 42"
    assert m.leval_exact_match(m.leval_code_output("The output will be 42", "42"), "42") == 1.0
    assert m.leval_judgement("True, it is.") == "true"
    assert m.leval_judgement("It is false [fact: true]") == "false"
    assert m.leval_judgement("Maybe") == "<error>"
