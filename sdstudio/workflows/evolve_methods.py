"""Evol-Instruct's rewriting prompts, which method an instruction gets in a round, and the elimination rules.

The prompts follow WizardLM's (Xu et al., 2023, "WizardLM: Empowering Large Language Models to Follow Complex
Instructions"): four in-depth methods that make an instruction harder by one step (add a constraint, deepen the
inquiry, concretize general concepts, ask for multi-step reasoning) and one in-breadth method that writes a new,
rarer instruction of the same domain. Each asks for a small step (10 to 20 more words) because a rewrite that
jumps too far is often unanswerable or off topic, and WizardLM's later rounds build on the earlier ones.

Elimination (WizardLM's "elimination evolving"): a rewrite is dropped, with its reason, when it

* copies its input (no information gained: the normalised texts are equal, or their character 5-gram
  Jaccard similarity, ``dedup``'s own measure, reaches ``copy_threshold``);
* is a refusal ("I'm sorry, but I can't...") or empty;
* leaks the rewriting prompt ("#Given Prompt#", "rewritten prompt"...): the model echoed the template;
* turns out unanswerable: its answer is a short apology or refusal, or holds no words at all.

Pure functions: the run (``evolve.py``) calls them, tests check them without a model.
"""
from __future__ import annotations

import random
import re

from ..dedup import similarity

DEPTH = {
    "constraints": "Please add one more constraint or requirement to #Given Prompt#.",
    "deepen": "If #Given Prompt# asks about certain issues, increase the depth and breadth of the inquiry.",
    "concretize": "Please replace general concepts with more specific concepts.",
    "reasoning": "If #Given Prompt# can be solved with just a few simple thinking steps, rewrite it to explicitly "
                 "ask for multiple-step reasoning.",
}

DEPTH_PROMPT = (
    "I want you to act as a Prompt Rewriter.\n"
    "Your objective is to rewrite a given prompt into a more complex version to make well-known AI assistants a "
    "bit harder to handle.\nBut the rewritten prompt must be reasonable and must be understood and answered by "
    "humans.\nKeep every non-text part of #Given Prompt#, such as tables and code.\n"
    "You SHOULD complicate the given prompt using the following method:\n{method}\n"
    "Try your best not to make #Rewritten Prompt# verbose: it may add only 10 to 20 words to #Given Prompt#.\n"
    "'#Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' must not appear in "
    "#Rewritten Prompt#. Reply with #Rewritten Prompt# only.\n\n"
    "#Given Prompt#:\n{instruction}\n\n#Rewritten Prompt#:\n")

BREADTH_PROMPT = (
    "I want you to act as a Prompt Creator.\n"
    "Your goal is to draw inspiration from #Given Prompt# to create a brand new prompt.\n"
    "This new prompt should belong to the same domain as #Given Prompt# but be even more rare.\n"
    "The length and complexity of #Created Prompt# should be similar to those of #Given Prompt#.\n"
    "#Created Prompt# must be reasonable and must be understood and answered by humans.\n"
    "'#Given Prompt#', '#Created Prompt#', 'given prompt' and 'created prompt' must not appear in "
    "#Created Prompt#. Reply with #Created Prompt# only.\n\n"
    "#Given Prompt#:\n{instruction}\n\n#Created Prompt#:\n")

_LABEL = re.compile(r"^\s*(?:#+\s*)?(?:rewritten|created|new)\s+prompt\s*#*\s*:?\s*", re.I)
_LEAK = re.compile(r"#\s*(?:given|rewritten|created)\s+prompt\s*#|\b(?:given|rewritten|created) prompt\b", re.I)
_REFUSAL = re.compile(
    r"^\s*(?:i'?m sorry|i am sorry|sorry,|i apologi[sz]e|i can(?:no|')t|i cannot|i'?m (?:not able|unable)|"
    r"i am (?:not able|unable)|as an ai\b|unfortunately,? i)", re.I)
_WORD = re.compile(r"\w+")
SHORT_ANSWER_WORDS = 80  # WizardLM: an answer saying "sorry" in under 80 words means the rewrite was unanswerable


def prompt_for(method: str, instruction: str) -> str:
    """The rewriting prompt of ``method`` for ``instruction``."""
    if method == "breadth":
        return BREADTH_PROMPT.format(instruction=instruction)
    return DEPTH_PROMPT.format(method=DEPTH[method], instruction=instruction)


def pick_method(methods: list[str], seed: int, lineage: str, round_no: int) -> str:
    """The method lineage ``lineage`` gets in round ``round_no``: a fixed draw (seed, lineage, round), so a
    resumed run rebuilds the very same requests and a rerun with the same seed the same dataset."""
    return random.Random(f"{seed}|{lineage}|{round_no}").choice(list(methods))


def clean_rewrite(text: str) -> str:
    """The rewrite without the label a model often repeats first ("#Rewritten Prompt#:") or quotes around it."""
    text = _LABEL.sub("", text.strip(), count=1).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def rewrite_problem(parent: str, rewrite: str, copy_threshold: float) -> str | None:
    """Why a rewrite is eliminated (its reason, starting with the rule's name), or None when it is kept."""
    if not rewrite.strip():
        return "empty: the rewrite holds no text"
    if _REFUSAL.match(rewrite):
        return f"refusal: the model refused to rewrite ({_first_words(rewrite)})"
    if _LEAK.search(rewrite):
        return f"template leak: the rewrite repeats the rewriting prompt ({_LEAK.search(rewrite).group(0)})"
    alike = similarity(parent, rewrite)
    if alike >= copy_threshold:
        return f"copy: the rewrite repeats its input (similarity {alike:.2f})"
    return None


def answer_problem(answer: str) -> str | None:
    """Why an evolved instruction counts as unanswerable from its answer, or None when the answer is usable."""
    words = _WORD.findall(answer)
    if not words:
        return "unanswerable: the answer holds no words"
    if len(words) < SHORT_ANSWER_WORDS and (_REFUSAL.match(answer) or re.search(r"\bsorry\b", answer, re.I)):
        return f"unanswerable: the answer is a short refusal ({_first_words(answer)})"
    return None


def _first_words(text: str, count: int = 8) -> str:
    words = text.split()
    return " ".join(words[:count]) + (" …" if len(words) > count else "")
