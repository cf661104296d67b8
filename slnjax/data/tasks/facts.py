"""`facts`: questions over a synthetic knowledge base of people.

Each person has a birth year, a height in cm, a city and a best friend (another person).
Questions need one lookup ("In what year was Ana Belor born?") or two ("... the best friend
of Ana Belor ..."); difficulty = the number of lookups. Each example carries the fact strings
that answer it (`relevant_facts`) and `num_distractors` others (`distractor_facts`, half about
the same people when possible). Config `open_book` puts all of them, shuffled, in the prompt;
`closed_book` gives the question only. The knowledge base is shared by both splits; the
questions are split disjointly between `train` and `test`.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from slnjax.data.tasks import base

SYLLABLES = ("ka", "lo", "mi", "ra", "ten", "vi", "so", "da", "ne", "ur", "bel", "cor", "fen",
             "gil", "har", "jo", "mar", "nor", "pel", "quin", "ros", "sil", "tav", "wen", "yor")
CITIES = ("Lisbon", "Nairobi", "Osaka", "Quito", "Tbilisi", "Perth", "Bergen", "Tunis", "Hanoi",
          "Lima", "Porto", "Dakar", "Kyoto", "Cork", "Graz", "Malmo", "Oaxaca", "Accra", "Busan")
ATTRIBUTES = ("year", "height", "city")
QUESTIONS = {
    "year": "In what year was {} born?",
    "height": "How tall is {} in cm?",
    "city": "In which city does {} live?",
}


@dataclasses.dataclass(eq=False)
class FactsConfig(base.TaskConfig):
  """Knowledge-base size, distractor count, split fraction and prompt style."""

  num_people: int = 1_000
  num_distractors: int = 8
  test_fraction: float = 0.2
  facts_in_prompt: bool = True


def knowledge_base(seed: int, num_people: int) -> list[dict[str, Any]]:
  """People as dicts with name, year, height, city and friend (an index, never oneself)."""
  if num_people < 2:
    raise ValueError("facts: num_people must be >= 2")
  rng = base.split_rng(seed, "kb")
  names: list[str] = []
  while len(names) < num_people:
    first = "".join(rng.choice(SYLLABLES, size=2)).capitalize()
    last = "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))).capitalize()
    if f"{first} {last}" not in names:
      names.append(f"{first} {last}")
  order = rng.permutation(num_people)  # friend = next person in a random cycle
  friend = np.empty(num_people, dtype=int)
  friend[order] = np.roll(order, -1)
  return [
      {"name": names[i], "year": int(rng.integers(1930, 2011)),
       "height": int(rng.integers(150, 206)), "city": str(rng.choice(CITIES)),
       "friend": int(friend[i])}
      for i in range(num_people)
  ]


def fact(people: list[dict[str, Any]], i: int, attribute: str) -> str:
  """The sentence stating `attribute` (year, height, city or friend) of person i."""
  p = people[i]
  return {
      "year": f"{p['name']} was born in {p['year']}.",
      "height": f"{p['name']} is {p['height']} cm tall.",
      "city": f"{p['name']} lives in {p['city']}.",
      "friend": f"The best friend of {p['name']} is {people[p['friend']]['name']}.",
  }[attribute]


def make_example(people, i: int, attribute: str, hops: int, cfg: FactsConfig,
                 rng: np.random.Generator) -> dict[str, Any]:
  """The question about person i (hops=2: about i's best friend) with its fact strings."""
  subject = people[i]["name"] if hops == 1 else f"the best friend of {people[i]['name']}"
  j = i if hops == 1 else people[i]["friend"]
  relevant = [fact(people, j, attribute)] if hops == 1 else [
      fact(people, i, "friend"), fact(people, j, attribute)]
  near = [fact(people, k, a) for k in sorted({i, j}) for a in (*ATTRIBUTES, "friend")]
  near = [f for f in near if f not in relevant]
  n_near = min(len(near), cfg.num_distractors // 2)
  distractors = [near[k] for k in rng.choice(len(near), size=n_near, replace=False)]
  while len(distractors) < cfg.num_distractors:
    f = fact(people, int(rng.integers(len(people))), str(rng.choice([*ATTRIBUTES, "friend"])))
    if f not in relevant and f not in distractors:
      distractors.append(f)
  question = QUESTIONS[attribute].format(subject)
  prompt = f"Q: {question}\n"
  if cfg.facts_in_prompt:
    shown = relevant + distractors
    prompt = "".join(shown[k] + "\n" for k in rng.permutation(len(shown))) + prompt
  return {
      "prompt": prompt, "target": str(people[j][attribute]), "difficulty": hops,
      "question": question, "relevant_facts": relevant, "distractor_facts": distractors,
  }


def normalize(text: str) -> str:
  """Case-folded, whitespace-collapsed, without a trailing period."""
  return re.sub(r"\s+", " ", text).strip().rstrip(".").strip().casefold()


def verify(example: Mapping[str, Any], answer: str) -> bool:
  """True iff `answer` equals the stored target up to case, spacing and a final period."""
  return normalize(answer) == normalize(base.as_text(example["target"]))


class Facts(base.TaskBuilder, skip_registration=True):
  """Synthetic knowledge-base questions with relevant and distracting facts."""

  name = "facts"
  DESCRIPTION = __doc__
  BUILDER_CONFIGS = [
      FactsConfig(name="open_book", description="facts shown in the prompt"),
      FactsConfig(name="closed_book", facts_in_prompt=False, description="question only"),
  ]
  SPLITS = {"train": "num_train", "test": "num_test"}

  def _extra_features(self) -> dict[str, Any]:
    return {
        "question": tfds.features.Text(),
        "relevant_facts": tfds.features.Sequence(tfds.features.Text()),
        "distractor_facts": tfds.features.Sequence(tfds.features.Text()),
    }

  def _examples(self, split: str) -> Iterator[dict[str, Any]]:
    cfg = self.builder_config
    people = knowledge_base(cfg.seed, cfg.num_people)
    pool = [(i, a, h) for i in range(len(people)) for a in ATTRIBUTES for h in (1, 2)]
    order = base.split_rng(cfg.seed, "partition").permutation(len(pool))
    n_test = int(round(cfg.test_fraction * len(pool)))
    chosen = order[:n_test] if split == "test" else order[n_test:]
    rng = base.split_rng(cfg.seed, split)
    for k in chosen[: self._split_size(split)]:
      yield make_example(people, *pool[k], cfg, rng)
