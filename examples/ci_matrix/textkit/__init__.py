"""A small text toolkit: the project `ci_matrix.cond` tests."""

import re
import unicodedata


def words(text):
    """The words of `text`, lower-cased, in order."""
    return re.findall(r"[a-z0-9']+", text.lower())


def word_count(text):
    return len(words(text))


def unique_words(text):
    """Each word once, in the order of first appearance (not a set's order: that one changes
    with PYTHONHASHSEED, which is why the matrix runs every suite under two seeds)."""
    seen = {}
    for w in words(text):
        seen.setdefault(w, None)
    return list(seen)


def slugify(text):
    """`Hello, World!` → `hello-world`; accents are dropped."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "-".join(re.findall(r"[a-z0-9]+", ascii_text.lower()))
