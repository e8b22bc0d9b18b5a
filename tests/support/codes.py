"""Well-formed session codes for tests: wrong guesses that can never be the right code."""

from __future__ import annotations

from relay import protocol


def other_well_formed_code(code: str, n: int = 1) -> str:
    """The n-th code after `code`, counting through the code space in base len(CODE_ALPHABET).

    Distinct n give distinct codes, and none is `code` itself, for 1 <= n < the size of
    the code space: a test can make as many wrong guesses as it likes without one
    wrapping round to the right code (a shift of every character by n does, at n = 31).
    """
    alphabet = protocol.CODE_ALPHABET
    space = len(alphabet) ** protocol.CODE_LENGTH
    if not 1 <= n < space:
        raise ValueError(f"n must be in [1, {space}), not {n}")
    value = 0
    for ch in code:
        value = value * len(alphabet) + alphabet.index(ch)
    value = (value + n) % space
    digits = []
    for _ in range(protocol.CODE_LENGTH):
        value, digit = divmod(value, len(alphabet))
        digits.append(alphabet[digit])
    return "".join(reversed(digits))
