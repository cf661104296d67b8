r"""python -m slnjax.main --config experiments/facts_memory_loop.py --workdir /tmp/sln/facts_memory_loop

Memory inside the dialogue loop: a lateralized SLN answers closed-book `facts` questions
(the prompt is the question only). Each example's bank is its fact strings (the relevant
one or two and 8 distractors, shuffled; slnjax/data/bank.py). Once per dialogue a residual
multi-head selector over hashed n-grams picks k = 2 facts by Gumbel top-k (straight-through),
and both lobes read them as a prefix of their context: the left lobe in every turn it
writes, the critic when it scores. Trained end to end by BPTT through soft tokens; the
answer's cross-entropy reaches the selector through the prefix. Logs `memory_precision`
(the share of chosen facts that are relevant). Evaluated once, at the end, on the whole test
split: the top-k facts of the selector's scores (greedy, deterministic) are read, and
`eval/memory_precision`, `eval/memory_recall` (overall and per difficulty) are reported with
the accuracies; the transcripts list the selected facts (slnjax/evaluate_memory.py).
Not measured yet: no full-length run was made (estimated 20-40 minutes on a 2-core CPU).
Smoke version (tests): --config experiments/facts_memory_loop.py:smoke
"""
from experiments import common

TASK = dict(name="facts", config="closed_book", data_dir="",
            overrides=dict(name="closed_book_loop", num_people=300, num_train=6000,
                           num_test=600, num_distractors=8),
            bank=dict(capacity=10, item_len=72))
SMOKE_TASK = dict(TASK, overrides=dict(name="closed_book_loop_smoke", num_people=30,
                                       num_train=64, num_test=16, num_distractors=8))
MEMORY = dict(lobes=("left", "right"), selector="mha", residual=True, k=2, mode="gumbel_st",
              tau=0.5, key_dim=64, buckets=4096, hidden=64, heads=4)


def get_config(arg=None):
  smoke = arg == "smoke"
  steps = 4 if smoke else 1500
  return common.cpu_experiment(
      "lateralized", "bptt", arg, size=dict(checkpoint_every=500, eval=dict(num_batches=-1)),
      task=SMOKE_TASK if smoke else TASK, prompt_len=72, steps=steps, eval_every=steps,
      model=dict(loop=dict(turn_len=8, max_turns=2, mode="soft", threshold=0.5,
                           bptt_depth=-1),
                 memory=dict(MEMORY, key_dim=8, buckets=64, hidden=8, heads=2) if smoke
                 else MEMORY))
