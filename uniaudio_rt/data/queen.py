"""The English line behind each recorded speech file of Flight of the Amazon Queen (CD talkie).

The game's ``queen.1c`` (ScummVM's compressed layout, :func:`uniaudio_rt.data.sources.queen_entries`)
holds the speech as ``*.SB`` MP3 entries and the text in the game's own data, from which the engine
(ScummVM ``engines/queen``) builds the name of the file it plays for each line:

* ``QUEEN2.JAS``: CRLF text, one string per line: object descriptions, object names, room names,
  12 verbs, then 40 stock responses of Joe. ``QUEEN.JAS`` starts with the four counts (rooms, names,
  objects, descriptions) and the 16-byte object records (the last field, ``image``, is -3 or -4
  for a person). Joe saying response ``n`` plays ``JOE%04d`` % n, description ``n`` ``JOE%04d`` % (n + 40).
* ``*.DOG`` dialogue trees: a header (level count, talk key, Joe and person line counts, offsets),
  Joe's and the person's line tables (``[2 bytes][int16 id][string]``, strings 4-aligned) and a
  "talked before" pair. Joe's line ``id`` plays ``%2d%4xJ`` % (key, id), the person's ``%2d%4xP``;
  Joe's opening line (the first, id 0) ``%2dSSSSJ``; the pair ``%2dXXXXP`` and ``%2dXXXXJ``.
* ``*.CUT`` cutscenes: one sentence per object, in object order; a person's sentence plays
  ``NAME____%02d`` (name padded with ``_`` to 5) + segment, a text object's plays segment 1.
  Whether an object is a person needs its record (17 int16, persons, animation frames until -2).

Every ``.JAS``/``.DOG``/``.CUT`` resource starts with a 20-byte header, not counted in its offsets.
Strings are a length byte then Latin-1 text, the next offset rounded up to the table's alignment
(an empty string advances one byte). A sentence is cut into segments at its ``*`` commands (``*NN``,
``*FL``, ..., ``*XYnn(xxx,yyy)``); segment ``k`` plays ``prefix + "%x" % (k + 1)``, spaces in the
first 8 characters read as ``0``, upper case; ``*GD`` / ``*GM`` use a number and play nothing.
Integers are big-endian.
"""

from __future__ import annotations

import logging
import re
import struct
from typing import Callable, Iterator, Optional

log = logging.getLogger("uniaudio_rt.data")

HEADER = 20                 # "AmBk" header of every JAS/DOG/CUT resource
JOE_RESPONSES = 40
_SILENT = ("GD", "GM")      # commands that take a segment number and speak nothing


def _i16(d: bytes, o: int) -> int:
    return struct.unpack_from(">h", d, o)[0]


def _u16(d: bytes, o: int) -> int:
    return struct.unpack_from(">H", d, o)[0]


def pascal_string(d: bytes, off: int, align: int = 2) -> tuple[str, int]:
    """(string at ``off``, offset of the next one)."""
    n = d[off]
    if n == 0:
        return "", off + 1
    end = off + 1 + n
    if end > len(d):
        raise ValueError(f"string at {off} ({n} bytes) runs past the resource ({len(d)} bytes)")
    return d[off + 1:end].decode("latin-1"), -(-end // align) * align


def segments(sentence: str) -> list[tuple[int, str]]:
    """The spoken segments of a sentence: (segment number from 0, its text)."""
    out, k, start, i = [], 0, 0, 0
    while i < len(sentence):
        if sentence[i] != "*":
            i += 1
            continue
        code = sentence[i + 1:i + 3]
        if code not in _SILENT:
            out.append((k, sentence[start:i]))
        k += 1
        i += 3 + (11 if code == "XY" else 0)
        start = i
    if start < len(sentence):
        out.append((k, sentence[start:]))
    return out


def voice_file(prefix: str, segment: int) -> str:
    name = prefix + "%x" % (segment + 1)
    return (name[:8].replace(" ", "0") + name[8:]).upper() + ".SB"


def _spoken(prefix: str, sentence: str) -> Iterator[tuple[str, str]]:
    for k, text in segments(sentence):
        yield voice_file(prefix, k), text


class Strings:
    """Joe's responses, the object descriptions and which objects are persons (QUEEN.JAS, QUEEN2.JAS)."""

    def __init__(self, jas: bytes, jas2: bytes):
        d = jas[HEADER:]
        n_rooms, n_names, n_objects, n_desc = struct.unpack_from(">4H", d, 0)
        if 8 + 16 * n_objects > len(d):
            raise ValueError(f"QUEEN.JAS: {n_objects} object records do not fit in {len(d)} bytes")
        self.person = [False] + [_i16(d, 8 + 16 * i + 14) in (-3, -4) for i in range(n_objects)]
        lines = jas2.decode("latin-1").split("\n")
        lines = [s.rstrip("\r") for s in lines]
        joe = n_desc + n_names + n_rooms + 12
        if len(lines) < joe + JOE_RESPONSES:
            raise ValueError(f"QUEEN2.JAS: {len(lines)} lines, the Joe responses need {joe + JOE_RESPONSES}")
        self.descriptions = lines[:n_desc]
        self.responses = lines[joe:joe + JOE_RESPONSES]

    def is_person(self, obj: int) -> bool:
        return 0 < obj < len(self.person) and self.person[obj]

    def joe_lines(self) -> Iterator[tuple[str, str]]:
        for n, s in enumerate(self.responses, 1):
            yield from _spoken("JOE%04d" % n, s)
        for n, s in enumerate(self.descriptions, 1):
            if not re.search(r"\.(CUT|DOG)\s*$", s, re.I):       # a command, not a line
                yield from _spoken("JOE%04d" % (n + JOE_RESPONSES), s)


def dog_lines(raw: bytes) -> Iterator[tuple[str, str]]:
    """(voice file, text) of one dialogue tree."""
    d = raw[HEADER:]
    key = "%2d" % _i16(d, 4)
    n_joe, n_person = _i16(d, 6), _i16(d, 8)

    def table(off: int, count: int) -> Iterator[tuple[int, int, str]]:
        for i in range(count):
            ident = _i16(d, off + 2)
            s, off = pascal_string(d, off + 4, 4)
            yield i, ident, s

    for i, ident, s in table(32 + 96 * abs(_i16(d, 0)), n_joe):
        if i == 0 and ident == 0:
            yield from _spoken(key + "SSSSJ", s)
        elif ident > 0:
            yield from _spoken(key + "%4xJ" % ident, s)
    for _, ident, s in table(_u16(d, 22), n_person):
        if ident > 0:
            yield from _spoken(key + "%4xP" % ident, s)
    again_person, off = pascal_string(d, _u16(d, 26))
    again_joe, _ = pascal_string(d, off)
    for prefix, s in ((key + "XXXXP", again_person), (key + "XXXXJ", again_joe)):
        if s != "0":                                              # "0": no such line
            yield from _spoken(prefix, s)


def cut_lines(name: str, raw: bytes, is_person: Callable[[int], bool]) -> Iterator[tuple[str, str]]:
    """(voice file, text) of one cutscene; ValueError if its object records do not parse."""
    d = raw[HEADER:]
    base = name.rsplit(".", 1)[0].upper()
    prefix = (base + "_" * 5)[:5]
    _, s_off = pascal_string(d, _u16(d, 8))                      # the entry (facing) string
    p = 12
    for idx in range(1, abs(_i16(d, 2)) + 1):
        sentence, s_off = pascal_string(d, s_off)
        try:
            f = struct.unpack_from(">17h", d, p)
            p += 34
            p += 2 + 2 * _i16(d, p)                               # the object's persons
        except struct.error:
            raise ValueError(f"{name}: object record {idx} lies past the resource") from None
        obj, anim_list, execute, from_obj = (0 if f[0] == -1 else f[0]), f[4], f[5], f[12]
        if obj in (-2, -3):
            kind = "text"
        elif obj == -4 or from_obj > 0:
            kind = "silent"
        elif not anim_list and (obj == 0 or is_person(obj)):
            kind = "person"
        else:
            kind = "anim" if execute else "silent"
        if kind == "anim":                                        # frames until a -2 header
            while True:
                if p + 2 > len(d):
                    raise ValueError(f"{name}: animation of object {idx} runs past the resource")
                head = _i16(d, p)
                p += 2
                if head == -2:
                    break
                p += 18
        if kind not in ("person", "text") or sentence in ("", "*") or sentence.startswith("#"):
            continue
        cut = prefix + ("%02d" % idx)[:2]                        # the engine keeps two digits
        if kind == "text":
            yield voice_file(cut, 0), sentence
        else:
            yield from _spoken(cut, sentence)


def clean_line(text: str) -> Optional[str]:
    """A line as a transcript: the ``@@`` around sung lines dropped, whitespace collapsed; None when
    it is no plain speech (fewer than two letters, e.g. a spelled letter, or symbols such as the
    comic cuss ``&#($!!``)."""
    text = " ".join(text.replace("@@", " ").split())
    if len(re.findall(r"[A-Za-z]", text)) < 2 or re.search(r"[@#&$]", text):
        return None
    return text


def queen_lines(read: Callable[[str], bytes], names: list[str]) -> dict[str, str]:
    """{speech entry name: transcript} for the game whose resource ``name`` reads as ``read(name)``
    (``names``: all its resource names). Joe's lines first, then the dialogue trees, then the
    cutscenes, each in name order; the first non-empty text found for a file wins (as in the
    engine, which takes the first line of a repeated id). A cutscene whose records do not parse is
    left out (logged)."""
    strings = Strings(read("QUEEN.JAS"), read("QUEEN2.JAS"))
    found: dict[str, str] = {}

    def add(pairs: Iterator[tuple[str, str]]) -> None:
        for sb, text in pairs:
            text = " ".join(text.split())
            if text and text != "0" and sb not in found:
                found[sb] = text

    add(strings.joe_lines())
    for n in sorted(names):
        if n.upper().endswith(".DOG"):
            add(dog_lines(read(n)))
    for n in sorted(names):
        if n.upper().endswith(".CUT"):
            try:
                add(list(cut_lines(n, read(n), strings.is_person)))
            except (ValueError, IndexError) as e:
                log.warning("queen: cutscene %s left out: %s", n, e)
    out = {}
    for sb, text in found.items():
        t = clean_line(text)
        if t is not None:
            out[sb] = t
    return out
