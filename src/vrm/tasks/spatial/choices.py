"""What the spatial tasks share: grid sizes, the four moves, cell names, MVoT's question layout and
reading a chosen letter back from an answer.

MVoT's questions (its public data loaders) read::

    Task: FrozenLake
    Determine whether ... If not, identify the failure reason. The definitions of the actions are as below.
    * Go up/left/down/right: move one grid space in the absolute up/left/down/right direction.
    Return A, B or C.
    Full Action Sequence: Go right. Go up.
    A. Action Success.
    ...

and answers end with "The answer is X.". `mvot_question` writes that layout; ``style="short"``
writes a compact one-line version for tiny models with short contexts, and ``style="steps"`` the
same line with each action written as the visual format's step line for it ("Step 2: Go up."), so
a model drawing step k finds its action right after the question's own "Step k:".
"""

from __future__ import annotations

import re
from typing import Sequence

from vrm.answers import normalize_answer

LETTERS = "ABCD"
# gymnasium FrozenLake's action codes: 0 left, 1 down, 2 right, 3 up; the other tasks use the same words.
MOVES = ("left", "down", "right", "up")
STEP = {"left": (0, -1), "down": (1, 0), "right": (0, 1), "up": (-1, 0)}
MOVE_DEFINITION = "Go up/left/down/right: move one grid space in the absolute up/left/down/right direction."
STYLES = ("mvot", "short", "steps")

_ANSWER_IS = re.compile(r"answer\s+is\s*:?", re.IGNORECASE)
_LETTER = re.compile(r"[(\[]?([A-Za-z])[)\]]?(?:\s*[.:)]\s*|\s+|$)(.*)", re.DOTALL)


def where(cell: Sequence[int]) -> str:
    """A 0-indexed (row, column) in words, 1-indexed.

    >>> where((0, 2))
    'row 1, column 3'
    """
    return f"row {cell[0] + 1}, column {cell[1] + 1}"


def moved(cell: Sequence[int], move: str) -> tuple[int, int]:
    """The cell one step ``move`` away (no bounds check)."""
    dr, dc = STEP[move]
    return cell[0] + dr, cell[1] + dc


def mvot_question(task: str, instruction: str, definitions: Sequence[str], sequence: Sequence[str],
                  options: Sequence[str] = (), list_options: bool = True) -> str:
    """A question in MVoT's layout: task line, instruction, action definitions, the letters to
    return, the full action sequence and (when ``list_options``) the lettered options."""
    lines = [f"Task: {task}", f"{instruction} The definitions of the actions are as below."]
    lines += [f"* {d}" for d in definitions]
    letters = LETTERS[: len(options)]
    if list_options and options:
        lines.append(f"Return {', '.join(letters[:-1])} or {letters[-1]}.")
    lines.append("Full Action Sequence: " + " ".join(sequence))
    if list_options:
        lines += [f"{letter}. {option}" for letter, option in zip(letters, options)]
    return "\n".join(lines)


def action_phrase(action) -> str:
    """A trace action as MVoT words it: moves (gymnasium codes or words) become "Go down"; other
    actions ("pick up") are capitalised.

    >>> action_phrase(1), action_phrase("left"), action_phrase("pick up")
    ('Go down', 'Go left', 'Pick up')
    """
    word = MOVES[action] if isinstance(action, int) else str(action)
    return f"Go {word}" if word in MOVES else word.capitalize()


def action_list(words: Sequence[str], numbered: bool = False) -> str:
    """The actions of a one-line question: "right, up", or ``numbered`` as step lines ("Step 1: Go
    right. Step 2: Go up"; the question's full stop ends the last).

    >>> action_list(["down", "pick up"]), action_list(["down", "pick up"], numbered=True)
    ('down, pick up', 'Step 1: Go down. Step 2: Pick up')
    """
    if not numbered:
        return ", ".join(words)
    return ". ".join(f"Step {i}: {action_phrase(w)}" for i, w in enumerate(words, 1))


def short_question(question: str, words: Sequence[str], options: Sequence[str], numbered: bool = False) -> str:
    """The compact form: ``Actions: right, up. <question> A. ... B. ...`` (`action_list`).

    >>> short_question("Where does it end?", ["down", "pick up"], ["here", "there"])
    'Actions: down, pick up. Where does it end? A. here B. there'
    """
    choices = " ".join(f"{letter}. {o}" for letter, o in zip(LETTERS, options))
    return f"Actions: {action_list(words, numbered)}. {question} {choices}"


def answer_sentence(letter: str) -> str:
    return f"The answer is {letter}."


def _same_option(text: str, option: str) -> bool:
    """``text`` (normalised) is the option's text or a word-aligned ending of it."""
    o = normalize_answer(option)
    return bool(text) and (text == o or o.endswith(" " + text))


def choice_letter(answer: str, options: Sequence[str]) -> str | None:
    """The option letter an answer chooses, or None when it chooses none or contradicts itself.

    Accepted: the letter alone ("B", "b", "(B)", "B."), the letter with its option's text ("B.
    Action Failed: Fall into the Hole."), "The answer is B." (the last such phrase counts), or an
    option's exact text without its letter. A letter with another option's text, two letters or
    any other words give None.

    >>> opts = ["Action Success.", "Action Failed: Fall into the Hole."]
    >>> [choice_letter(a, opts) for a in ("B", "The answer is b.", "(A)", "B. Fall into the hole")]
    ['B', 'B', 'A', 'B']
    >>> [choice_letter(a, opts) for a in ("A or B", "A. Fall into the hole", "a hole", "C", "action success")]
    [None, None, None, None, 'A']
    """
    letters = LETTERS[: len(options)]
    text = _ANSWER_IS.split(str(answer).strip())[-1].strip()
    m = _LETTER.fullmatch(text)
    if m and m.group(1).upper() in letters:
        letter = m.group(1).upper()
        rest = normalize_answer(m.group(2))
        if not rest or _same_option(rest, options[letters.index(letter)]):
            return letter
    whole = normalize_answer(text)
    hits = [letter for letter, o in zip(letters, options) if whole and whole == normalize_answer(o)]
    return hits[0] if len(hits) == 1 else None


def parse_sizes(sizes, minimum: int) -> tuple[int, ...]:
    """Grid sizes from a tuple, a list, an int or a string like "3,4" (from the command line)."""
    if isinstance(sizes, str):
        sizes = [s for s in sizes.replace(" ", "").split(",") if s]
    elif isinstance(sizes, int):
        sizes = [sizes]
    try:
        out = tuple(int(s) for s in sizes)
    except (TypeError, ValueError):
        raise ValueError(f"sizes must be whole numbers, got {sizes!r}") from None
    if not out or min(out) < minimum:
        raise ValueError(f"sizes must be at least {minimum}, got {list(out)}")
    return out


def check_min_actions(min_actions: int, max_actions: int | None, sizes: tuple[int, ...]) -> None:
    """``min_actions`` must be at least 1 and leave room below every size's longest walk (``max_actions``,
    or 2n + 1 on an n x n grid): one move more, since a walk to a goal keeps its distance's parity.

    >>> check_min_actions(8, 13, (3, 4, 5))
    >>> check_min_actions(7, None, (3, 4))
    Traceback (most recent call last):
    ValueError: min_actions must be in 1..6 (max_actions 7 on a 3x3 grid); got 7
    """
    n = min(sizes)
    limit = max_actions or 2 * n + 1
    if not 1 <= min_actions <= limit - 1:
        raise ValueError(f"min_actions must be in 1..{limit - 1} (max_actions {limit} on a {n}x{n} grid); "
                         f"got {min_actions}")
