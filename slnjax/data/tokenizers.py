"""Tokenizers with one small interface: encode, decode, special ids, vocab_size.

`ByteTokenizer` needs no files (the default for the synthetic tasks): pad=0, bos=1, eos=2,
stop-of-turn=3, byte b -> b + 4; vocab_size 260, or larger if asked (e.g. 384 for
TPU-friendly shapes; the extra ids are never produced and decode to nothing).
`HFTokenizer` wraps a Hugging Face `tokenizer.json` (pretrained lobes) via `tokenizers`.
`encode` never adds special tokens; the input pipeline adds bos/eos itself.
"""
from __future__ import annotations

import os
from typing import Iterable, Protocol, Sequence


class Tokenizer(Protocol):
  """What the pipeline and the loop need from a tokenizer."""

  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int
  stop_of_turn_id: int

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Iterable[int]) -> str: ...


class ByteTokenizer:
  """UTF-8 bytes shifted by 4 special ids. `decode` drops special and out-of-range ids."""

  pad_id, bos_id, eos_id, stop_of_turn_id = 0, 1, 2, 3
  NUM_SPECIAL = 4

  def __init__(self, vocab_size: int = 260):
    if vocab_size < 256 + self.NUM_SPECIAL:
      raise ValueError(f"ByteTokenizer needs vocab_size >= 260, got {vocab_size}")
    self.vocab_size = int(vocab_size)

  def encode(self, text: str) -> list[int]:
    return [b + self.NUM_SPECIAL for b in text.encode("utf-8")]

  def decode(self, ids: Iterable[int]) -> str:
    lo, hi = self.NUM_SPECIAL, 256 + self.NUM_SPECIAL
    data = bytes(int(i) - lo for i in ids if lo <= int(i) < hi)
    return data.decode("utf-8", errors="replace")

  def __repr__(self) -> str:
    return f"ByteTokenizer(vocab_size={self.vocab_size})"


# Token strings tried, in order, when a special token is not named explicitly.
_CANDIDATES = {
    "bos": ("<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>", "<|endoftext|>"),
    "eos": ("<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"),
    "pad": ("<pad>", "<|pad|>", "[PAD]", "<|padding|>"),
    "stop_of_turn": ("<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|stop_of_turn|>"),
}
STOP_OF_TURN_TOKEN = "<|stop_of_turn|>"


class HFTokenizer:
  """A `tokenizer.json` through the `tokenizers` library.

  Special tokens may be named (token strings); otherwise common names are tried. bos falls
  back to eos, pad to eos. If no stop-of-turn token exists, "<|stop_of_turn|>" is added as
  a new special token (id = the old vocab size): the lobe's embedding must cover
  `vocab_size`, which counts added tokens.
  """

  def __init__(self, path: str, *, bos: str | None = None, eos: str | None = None,
               pad: str | None = None, stop_of_turn: str | None = None):
    import tokenizers  # pylint: disable=g-import-not-at-top

    if os.path.isdir(path):
      path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"no tokenizer file at {path} (expected a tokenizer.json)")
    self.path = path
    self._tok = tokenizers.Tokenizer.from_file(path)
    self.eos_id = self._special("eos", eos)
    if self.eos_id is None:
      raise ValueError(f"{path}: no eos token found (tried {_CANDIDATES['eos']}); "
                       "name one with eos=...")
    self.bos_id = self._special("bos", bos)
    self.bos_id = self.eos_id if self.bos_id is None else self.bos_id
    self.pad_id = self._special("pad", pad)
    self.pad_id = self.eos_id if self.pad_id is None else self.pad_id
    sot = self._special("stop_of_turn", stop_of_turn)
    if sot is None:
      self._tok.add_special_tokens([tokenizers.AddedToken(STOP_OF_TURN_TOKEN, special=True)])
      sot = self._tok.token_to_id(STOP_OF_TURN_TOKEN)
    self.stop_of_turn_id = sot
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

  def _special(self, role: str, token: str | None) -> int | None:
    if token is not None:
      token_id = self._tok.token_to_id(token)
      if token_id is None:
        raise ValueError(f"{self.path}: {role} token {token!r} is not in the vocabulary")
      return token_id
    for candidate in _CANDIDATES[role]:
      token_id = self._tok.token_to_id(candidate)
      if token_id is not None:
        return token_id
    return None

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Iterable[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

  def __repr__(self) -> str:
    return f"HFTokenizer({self.path!r}, vocab_size={self.vocab_size})"


def load_tokenizer(spec: str | None = None, **special: str) -> Tokenizer:
  """None or "byte" -> ByteTokenizer(); "byte:N" -> ByteTokenizer(N); a tokenizer.json
  path (or a directory holding one) -> HFTokenizer(path, **special)."""
  if spec is None or spec == "byte":
    return ByteTokenizer()
  if spec.startswith("byte:"):
    return ByteTokenizer(int(spec.split(":", 1)[1]))
  return HFTokenizer(spec, **special)


def truncate_at(ids: Sequence[int], stop_ids: Iterable[int]) -> list[int]:
  """`ids` up to (not including) the first id in `stop_ids` (e.g. eos, stop-of-turn)."""
  stops = set(int(s) for s in stop_ids)
  out = []
  for i in ids:
    if int(i) in stops:
      break
    out.append(int(i))
  return out
