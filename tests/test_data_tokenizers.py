"""Byte-level and tokenizer.json tokenizers: round trips, special ids, errors."""
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers, trainers

from slnjax.data.tokenizers import (
    STOP_OF_TURN_TOKEN, ByteTokenizer, HFTokenizer, load_tokenizer, truncate_at)


def test_byte_tokenizer_layout_and_round_trip():
  tok = ByteTokenizer()
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.stop_of_turn_id) == (0, 1, 2, 3)
  assert tok.vocab_size == 260
  assert tok.encode("A") == [ord("A") + 4]
  text = "12+34=46\nnaïve ✓"
  ids = tok.encode(text)
  assert min(ids) >= 4 and max(ids) < 260
  assert tok.decode(ids) == text


def test_byte_tokenizer_decode_drops_specials_and_padding_ids():
  tok = ByteTokenizer(vocab_size=384)
  assert tok.vocab_size == 384
  ids = [tok.bos_id] + tok.encode("hi") + [tok.stop_of_turn_id, tok.eos_id, 300, tok.pad_id]
  assert tok.decode(ids) == "hi"
  with pytest.raises(ValueError, match="260"):
    ByteTokenizer(vocab_size=100)


def test_truncate_at_stops():
  assert truncate_at([5, 6, 2, 7], [2, 3]) == [5, 6]
  assert truncate_at([5, 6], [2]) == [5, 6]


def _write_tokenizer(path, specials):
  tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", *specials],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(["the cat sat on the mat", "12+34=46", "hello world"] * 20, trainer)
  tok.decoder = tokenizers.decoders.ByteLevel()
  tok.save(str(path))
  return path


def test_hf_tokenizer_infers_specials_and_adds_stop_of_turn(tmp_path):
  path = _write_tokenizer(tmp_path / "tokenizer.json", ["<|endoftext|>", "<pad>"])
  tok = HFTokenizer(str(tmp_path))  # a directory holding tokenizer.json works too
  eot = tok._tok.token_to_id("<|endoftext|>")
  assert tok.eos_id == eot and tok.bos_id == eot
  assert tok.pad_id == tok._tok.token_to_id("<pad>")
  assert tok.stop_of_turn_id == tok._tok.token_to_id(STOP_OF_TURN_TOKEN)
  assert tok.vocab_size == tok.stop_of_turn_id + 1
  ids = tok.encode("the cat sat")
  assert eot not in ids and tok.decode(ids) == "the cat sat"
  assert tok.decode([tok.bos_id, *ids, tok.stop_of_turn_id, tok.eos_id]) == "the cat sat"
  assert load_tokenizer(str(path)).vocab_size == tok.vocab_size


def test_hf_tokenizer_named_specials_and_errors(tmp_path):
  path = _write_tokenizer(tmp_path / "tok.json", ["<s>", "</s>", "<|im_end|>"])
  tok = HFTokenizer(str(path), pad="<s>")
  raw = tokenizers.Tokenizer.from_file(str(path))
  assert tok.bos_id == raw.token_to_id("<s>") == tok.pad_id
  assert tok.eos_id == raw.token_to_id("</s>")
  assert tok.stop_of_turn_id == raw.token_to_id("<|im_end|>")
  assert tok.vocab_size == raw.get_vocab_size(with_added_tokens=True)
  with pytest.raises(ValueError, match="not in the vocabulary"):
    HFTokenizer(str(path), eos="<nope>")
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    HFTokenizer(str(tmp_path / "missing"))
  no_eos = _write_tokenizer(tmp_path / "noeos.json", [])
  with pytest.raises(ValueError, match="no eos token"):
    HFTokenizer(str(no_eos))


def test_load_tokenizer_specs():
  assert isinstance(load_tokenizer(), ByteTokenizer)
  assert load_tokenizer("byte").vocab_size == 260
  assert load_tokenizer("byte:512").vocab_size == 512
