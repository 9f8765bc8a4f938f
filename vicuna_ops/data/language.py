"""A small, dependency-free language guess for filtering conversations.

Good enough to keep or skip whole conversations, not to tag sentences: non-Latin scripts are
told apart by their Unicode blocks (kana means Japanese even among Han characters, Hangul
Korean, ...), Latin-script languages by how often their commonest short words occur. Code
blocks, inline code and URLs are ignored, so a Python question in English reads as English.
Text with too few clues is ``unknown``, which ``--keep-lang`` / ``--skip-lang`` can name too.

Codes are ISO 639-1: en es fr de pt it nl pl tr id vi sv zh ja ko ru uk ar fa he el th hi,
plus ``unknown``.
"""

from __future__ import annotations

import re
from collections import Counter

UNKNOWN = "unknown"
LANGUAGES = ("en", "es", "fr", "de", "pt", "it", "nl", "pl", "tr", "id", "vi", "sv", "zh", "ja",
             "ko", "ru", "uk", "ar", "fa", "he", "el", "th", "hi", UNKNOWN)
SAMPLE_CHARS = 4000

_CODE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`|https?://\S+", re.DOTALL)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)

# Frequent function words, chosen to overlap little between languages.
_STOPWORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split()) for lang, words in {
        "en": "the and is are of to in that it for you with this was what how can be not "
              "have on do i my your please write",
        "es": "el la los las y es de que en un una por para con no se del como pero más "
              "está qué puedes",
        "fr": "le la les et est des une un du que qui dans pour pas sur avec ce vous je "
              "sont peux",
        "de": "der die das und ist nicht ein eine zu den mit sich auf für ich sie es wie "
              "auch bitte",
        "pt": "o os as e é de que um uma não em para com por do da você mais como está",
        "it": "il lo gli e è di che un una non per con sono della come anche questo",
        "nl": "de het een en is van dat niet op te zijn met voor ik je wat",
        "pl": "i w nie się na to jest że z do jak co czy tak ale",
        "tr": "ve bir bu da de için ile ne mi çok gibi daha olarak",
        "id": "dan yang di ini itu dengan untuk tidak dari ada saya akan bisa",
        "sv": "och att det är som en på för av med jag inte har",
    }.items()
}
# Letters that settle a Latin-script tie at once.
_LATIN_MARKS = {"vi": set("ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ")}
_CYRILLIC_UK = set("іїєґ")
_ARABIC_FA = set("پچژگ")


def _script(char: str) -> str | None:
    code = ord(char)
    if code < 0x0250:
        return "latin" if char.isalpha() else None
    if 0x0370 <= code <= 0x03FF:
        return "el"
    if 0x0400 <= code <= 0x04FF:
        return "cyrillic"
    if 0x0590 <= code <= 0x05FF:
        return "he"
    if 0x0600 <= code <= 0x06FF:
        return "arabic"
    if 0x0900 <= code <= 0x097F:
        return "hi"
    if 0x0E00 <= code <= 0x0E7F:
        return "th"
    if 0x1E00 <= code <= 0x1EFF:
        return "latin"
    if 0x3040 <= code <= 0x30FF:
        return "kana"
    if 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF:
        return "ko"
    if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF:
        return "han"
    return None


def detect_language(text: str) -> str:
    """An ISO 639-1 code for the text's main language, or ``unknown``."""
    sample = _CODE.sub(" ", text[: SAMPLE_CHARS * 2])[:SAMPLE_CHARS]
    scripts = Counter(script for char in sample if (script := _script(char)))
    if not scripts:
        return UNKNOWN
    script, count = scripts.most_common(1)[0]
    if script in ("han", "kana"):
        # Japanese mixes kana into Han text; Chinese has none.
        return "ja" if scripts["kana"] >= max(3, scripts["han"] // 10) else "zh"
    if script == "cyrillic":
        return "uk" if any(char in _CYRILLIC_UK for char in sample.lower()) else "ru"
    if script == "arabic":
        return "fa" if any(char in _ARABIC_FA for char in sample) else "ar"
    if script != "latin":
        return script
    if scripts["han"] + scripts["kana"] > count // 2:  # CJK text with English terms in it
        return "ja" if scripts["kana"] >= 3 else "zh"
    return _latin_language(sample)


def _latin_language(sample: str) -> str:
    lowered = sample.lower()
    for lang, marks in _LATIN_MARKS.items():
        if sum(1 for char in lowered if char in marks) >= 5:
            return lang
    words = _WORD.findall(lowered)
    if not words:
        return UNKNOWN
    scores = Counter()
    for word in words:
        for lang, stopwords in _STOPWORDS.items():
            if word in stopwords:
                scores[lang] += 1
    if not scores:
        return UNKNOWN
    (best, top), *rest = scores.most_common(2) + [("", 0)]
    runner_up = rest[0][1]
    # Enough clues, and clearly ahead of the next language.
    if top >= 2 and top >= 0.05 * len(words) and top > runner_up * 1.2:
        return best
    return UNKNOWN
