"""python -m slnjax.dialogue: a tiny trained run's dialogue on a typed prompt, turn by turn;
bad input is one error line."""
import os
import tempfile

import pytest

from slnjax import config as cfg, data, dialogue, train
from experiments import common

DATA_DIR = os.path.join(tempfile.gettempdir(), "slnjax_test_data")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  w = str(tmp_path_factory.mktemp("run"))
  c = common.experiment("lateralized", "sft", smoke=True, steps=1, checkpoint_every=1,
                     task=dict(data_dir=DATA_DIR), model=dict(loop=dict(max_turns=3)))
  train.train(c, w)
  return w


def cli(capsys, *args):
  code = 0
  try:
    dialogue.main(list(args))
  except SystemExit as e:
    code = e.code
  out, err = capsys.readouterr()
  return code, out, err


def test_turn_by_turn(workdir, capsys):
  code, out, err = cli(capsys, "--workdir", workdir, "--prompt", "12+34=", "--temperature", "0")
  assert code == 0, err
  lines = out.strip().splitlines()
  assert lines[0] == "lateralized SLN, checkpoint step 1"
  assert lines[1] == "prompt: '12+34=' (7 tokens with bos)"
  turns = [l for l in lines if l.startswith("turn ")]
  assert 1 <= len(turns) <= 3 and all("| critic score 0." in l for l in turns)
  scores = [float(l.rsplit(" ", 1)[1]) for l in turns]
  # the loop stops at the first turn whose score reaches the threshold (0.5), else at 3
  want = "threshold" if scores[-1] >= 0.5 else "idl_limit"
  assert all(s < 0.5 for s in scores[:-1])
  assert lines[-1].startswith(f"halted: {want} after {len(turns)} turn(s); ")
  r = dialogue.run(workdir, "12+34=", turns=1, temperature=0)
  assert len(r["turns"]) == 1 and r["halted"] in ("threshold", "idl_limit")
  assert r["flops"] > 0 and r["prompt_ids"] == [1] + [ord(ch) + 4 for ch in "12+34="]


@pytest.mark.parametrize("args,says", [
    (("--prompt", ""), "--prompt is empty"),
    (("--prompt", "1+1=", "--turns", "0"), "--turns 0"),
    (("--prompt", "1+1=", "--step", "7"), "--step 7: no checkpoint at that step"),
    (("--prompt", "1+1=", "--temperature", "-1"), "--temperature -1"),
    (("--prompt", "1+1=", "--turns", "x"), "invalid int value"),
])
def test_bad_input_is_one_error_line(workdir, capsys, args, says):
  code, out, err = cli(capsys, "--workdir", workdir, *args)
  assert code == 2 and out == ""
  assert err.startswith("error: ") and says in err and err.count("\n") == 1


def test_no_checkpoint(tmp_path, capsys):
  code, _, err = cli(capsys, "--workdir", str(tmp_path), "--prompt", "1+1=")
  assert code == 2 and err.startswith("error: no checkpoint in ") and err.count("\n") == 1


def test_unknown_characters(tmp_path):
  tokenizers = pytest.importorskip("tokenizers")
  vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>"] + list("0123456789+="))}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Split("", "isolated")
  tok.decoder = tokenizers.decoders.Fuse()
  tok.save(str(tmp_path / "tokenizer.json"))
  hf = data.load_tokenizer(str(tmp_path))
  assert dialogue.encode_prompt(hf, "12+3=", hf.vocab_size)[1:] == hf.encode("12+3=")
  with pytest.raises(dialogue.UserError, match=r"cannot encode the characters 'ab'"):
    dialogue.encode_prompt(hf, "1a+b=", hf.vocab_size)
  byte = data.ByteTokenizer()
  with pytest.raises(dialogue.UserError, match="outside the model's vocabulary of 100"):
    dialogue.encode_prompt(byte, "zz", 100)
