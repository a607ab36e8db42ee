"""The console's words in Chinese (issue 33, item 1): every message the templates and the
console's code ask for has its translation in the catalogue, so no page shows English
inside a Chinese one."""

import glob
import os

from babel.messages.extract import extract
from jinja2.ext import babel_extract

from cocharge.web import i18n

WEB = os.path.dirname(i18n.__file__)
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2)}


def asked_for() -> set[tuple[str, str]]:
    """(file, message id) of every literal message in the templates and web/*.py."""
    found: set[tuple[str, str]] = set()
    for path in glob.glob(os.path.join(WEB, "templates", "*.html")):
        with open(path, "rb") as handle:
            for _line, _function, message, _comments in babel_extract(
                    handle, KEYWORDS, [], {}):
                for text in message if isinstance(message, tuple) else (message,):
                    if isinstance(text, str):
                        found.add((os.path.basename(path), text))
    for path in glob.glob(os.path.join(WEB, "*.py")):
        with open(path, "rb") as handle:
            for _line, message, _comments, _context in extract("python", handle, KEYWORDS):
                for text in message if isinstance(message, tuple) else (message,):
                    if text:
                        found.add((os.path.basename(path), text))
    return found


def test_every_message_of_the_console_is_translated():
    asked = asked_for()
    # the extractors see both kinds of source (a broken extraction would find nothing)
    assert {f for f, _ in asked} >= {"base.html", "member.html", "console.py"}
    assert ("member.html", "Language at the charger") in asked
    assert ("station.html", "start: the member's tag") in asked  # an escaped quote, read
    missing = sorted(f"{f}: {text!r}" for f, text in asked if text not in i18n.MESSAGES["zh"])
    assert missing == []


def test_the_scripts_words_are_translated():
    """The words console.js writes itself travel in the page (i18n.js_messages)."""
    assert [w for w in i18n.JS_WORDS if w not in i18n.MESSAGES["zh"]] == []
