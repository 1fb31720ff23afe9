"""Text facts shared by the engine, evaluation and prompts: which characters are CJK
(Chinese, Japanese, Korean letters), and the normal form answers and prompts are compared in.

A CJK character is a word of its own (no spaces between them), so redundancy counts each as a
unit, scoring ignores spaces beside them, and prompts containing them are Chinese. Punctuation
(。，「」) is not in the class: it ends clauses, it does not carry words.
"""

from __future__ import annotations

import re
import unicodedata

# Radicals, kana, bopomofo, ideographs (extension A, unified, compatibility, extension B on),
# hangul syllables. For use inside a regex character class: f"[{CJK}]".
CJK = (
    "\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f"
)
_ANY_CJK = re.compile(f"[{CJK}]")


def has_cjk(text: str) -> bool:
    return _ANY_CJK.search(text) is not None


_SPACE_BY_CJK = re.compile(f"(?<=[{CJK}]) | (?=[{CJK}])")


def normalise(text: str, keep_punctuation: bool = False) -> str:
    """NFKC (full-width to half-width), case folded, whitespace collapsed and dropped next to
    CJK characters (where it carries no meaning); punctuation and symbols become spaces unless
    kept."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if not keep_punctuation:
        text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return _SPACE_BY_CJK.sub("", " ".join(text.split()))
