r"""python experiments/loop_verdict.py --workdir /tmp/sln/verdict --size small --seed 0

Does the loop help? (issue 21) The recipe on the loop-test task (`addition` config
`loop_test`: plain format, both operands 5-6 digits, carry chains 0-6 equally often), a
lateralized SLN (left lobe writes, right lobe scores), four stages, each from the last:

  1. sft              the left lobe learns the answers (eq. 1);
  2. verifier_critic  the right lobe learns the verifier's label of the left lobe's own
                      turns; then the critic's threshold τ for precision >= 0.99 is read from
                      the evaluation on the validation split (tau.json; 0.99 when no
                      threshold reaches it) and the later stages halt at τ;
  3. revision_sft     the left lobe on dialogues of its own wrong attempts, the critic's
                      scores, then the correct answer (and right first attempts kept);
  4. revision_rl      RLOO over 4 samples per prompt, reward r_1 + r_T + α(r_T − r_1),
                      KL to the start of the stage on turn 1 (α = 10, β = 0.1).

Each stage's test evaluation (``slnjax.evaluate``'s report: accuracy by turn, flips,
best-of-T with the same critic, majority vote, retry without feedback, pass@k, critic
precision/recall/AUC, McNemar p, by carry chain, training and inference FLOPs) is written
to <workdir>/<stage>/eval.json; <workdir>/summary.json gathers the main figures.

Several seeds: ``--aggregate W0/summary.json,W1/summary.json,... --workdir OUT`` writes
OUT/aggregate.json and prints mean ± standard error per stage and figure.

Runnable by stages and resumable: ``--stages`` picks stages (default all, in order); a stage
whose checkpoint at its last step exists is skipped, one that was stopped resumes from its
latest checkpoint (train.train), and an evaluation whose eval.json exists is not redone.

Sizes: ``smoke`` (tests: seconds), ``small`` (a CPU budget: d_model 64, 2 layers) and
``full`` (the issue's size: d_model 128, 4 layers, 5,000 test problems; not run here).
Run time (size small, measured 2026-12-05 on a quiet 2-core Xeon): ~5.1 min per seed (SFT
2.5 min, then ~1 min per stage with its evaluation); 39 min under load 8-10.
Result (3 seeds, 256 test problems; docs/results.md "Does the loop help? (2/3): three seeds"):
SFT turn 1 22.8 ± 11.6% (30.5 / 0.0 / 37.9); after verifier_critic the loop's final answer
is worse than turn 1 (6.2 ± 6.2%; McNemar p 2.8e-18 and 3.6e-15 on the two seeds that
learned the task), no wrong turn 1 is ever made right; revision_sft leaves turns 2-3 at 0%;
revision_rl (α = 10) collapses turn 1 to 1.3 ± 0.8%. At this size the loop hurts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this slnjax

STAGES = ("sft", "verifier_critic", "revision_sft", "revision_rl")
TAU_FALLBACK = 0.99

_LOBE = {"small": dict(d_model=64, d_ff=256, n_layers=2),
         "full": dict(d_model=128, d_ff=512, n_layers=4)}
SIZES = {
    "small": dict(train=50_000, batch=64, num=256,
                  steps=dict(sft=2000, verifier_critic=100, revision_sft=150, revision_rl=50)),
    "full": dict(train=200_000, batch=64, num=5000,
                 steps=dict(sft=20000, verifier_critic=1000, revision_sft=2000, revision_rl=1000)),
    "smoke": dict(train=256, batch=4, num=8,
                  steps=dict(sft=2, verifier_critic=2, revision_sft=2, revision_rl=1)),
}
LR = dict(sft=(2e-3, 3e-3), verifier_critic=(1e-4, 1e-3), revision_sft=(3e-4, 1e-4),
          revision_rl=(1e-4, 1e-4))  # (left, right)
OBJECTIVE = dict(sft={}, verifier_critic={}, revision_sft=dict(max_wrong=3, refresh_every=10),
                 revision_rl=dict(samples=4, alpha=10.0, beta=0.1))


def stage_config(stage: str, size: str, seed: int, workdir: str, threshold: float):
  """The config of one stage (init_from: the previous stage's workdir)."""
  from experiments import common  # pylint: disable=import-outside-toplevel
  s = SIZES[size]
  i = STAGES.index(stage)
  lr_l, lr_r = LR[stage]
  steps = s["steps"][stage]
  kw = dict(
      task=dict(config="loop_test", overrides=dict(name=f"loop_test_{size}",
                                                  num_train=s["train"])),
      seed=seed, batch_size=s["batch"], prompt_len=16, steps=steps, log_every=max(1, steps // 10),
      eval_every=0, checkpoint_every=steps, init_from=os.path.join(workdir, STAGES[i - 1])
      if i else "",
      model=dict(loop=dict(turn_len=8, max_turns=3, mode="hard", temperature=0.7,
                           threshold=threshold)),
      objective=dict(OBJECTIVE[stage]),
      optim=dict(left=dict(lr=lr_l, warmup_steps=min(20, steps)),
                 right=dict(lr=lr_r, warmup_steps=min(20, steps))))
  if size == "smoke":
    kw["task"]["overrides"].update(num_test=16, num_validation=16, num_test_longer=8)
    kw["task"]["data_dir"] = os.path.join(workdir, "data")
    return common.experiment("lateralized", stage, smoke=True, **kw)
  kw["model"].update(left=dict(_LOBE[size]), right=dict(_LOBE[size]))
  return common.experiment("lateralized", stage, **kw)


def _done(workdir: str, steps: int) -> bool:
  return os.path.isdir(os.path.join(workdir, "checkpoints", str(steps)))


def _evaluate(stage_dir: str, split: str, num: int) -> dict:
  from slnjax import eval_cli  # pylint: disable=import-outside-toplevel
  path = os.path.join(stage_dir, "eval.json" if split == "test" else f"eval_{split}.json")
  if not os.path.exists(path):
    eval_cli.run(stage_dir, split=split, num=num)
  with open(path) as f:
    return json.load(f)


def _tau(workdir: str, size: str, num: int) -> float:
  path = os.path.join(workdir, "tau.json")
  if not os.path.exists(path):
    rep = _evaluate(os.path.join(workdir, "verifier_critic"), "validation", num)
    t = (rep.get("critic") or {}).get("threshold_p99")
    with open(path, "w") as f:
      json.dump({"threshold_p99": t, "tau": TAU_FALLBACK if t is None else float(t),
                 "split": "validation", "size": size}, f)
  with open(path) as f:
    return float(json.load(f)["tau"])


def _brief(rep: dict) -> dict:
  pick = lambda x: None if x is None else x["acc"]
  c = rep.get("critic") or {}
  return {"acc_by_turn": rep["acc_by_turn"], "turns_mean": rep["turns_mean"],
          "flips": rep["flips"], "best_of_T": pick(rep["best_of_T"]),
          "majority_T": pick(rep["majority_T"]),
          "retry_no_feedback": pick(rep["retry_no_feedback"]),
          "pass_at_k": {k: v["acc"] for k, v in rep["pass_at_k"].items()},
          "critic": {k: c.get(k) for k in ("precision", "recall", "auc", "threshold",
                                           "threshold_p99", "recall_at_p99")},
          "mcnemar_p": rep.get("mcnemar_p"), "train_flops": rep.get("train_flops"),
          "infer_flops_per_example": rep.get("inference_flops_per_example")}


def run(workdir: str, size: str = "small", seed: int = 0, stages=STAGES,
        num: int | None = None) -> dict:
  from slnjax import train  # pylint: disable=import-outside-toplevel
  num = num or SIZES[size]["num"]
  workdir = os.path.abspath(workdir)
  summary_path = os.path.join(workdir, "summary.json")
  summary = {}
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      summary = json.load(f)
  for stage in STAGES:
    if stage not in stages:
      continue
    late = STAGES.index(stage) >= STAGES.index("revision_sft")
    tau = _tau(workdir, size, num) if late else 0.5
    config = stage_config(stage, size, seed, workdir, tau)
    stage_dir = os.path.join(workdir, stage)
    t0 = time.time()
    if not _done(stage_dir, config.steps):
      print(f"== {stage}: {config.steps} steps in {stage_dir} (halting at {tau:.3f})", flush=True)
      train.train(config, stage_dir)
    rep = _evaluate(stage_dir, "test", num)
    summary[stage] = {**_brief(rep), "tau": tau, "steps": config.steps,
                      "wall_s_this_call": round(time.time() - t0, 1)}
    summary["size"], summary["seed"], summary["num"] = size, seed, num
    with open(summary_path, "w") as f:
      json.dump(summary, f, indent=1)
    b = summary[stage]
    print(f"   {stage}: acc by turn {[round(a, 3) for a in b['acc_by_turn']]}, turns "
          f"{b['turns_mean']:.2f}, best-of-T {b['best_of_T']}, pass@k {b['pass_at_k']}",
          flush=True)
  return summary


def _mean_se(xs):
  xs = [float(x) for x in xs if x is not None]
  if not xs:
    return None, None
  m = sum(xs) / len(xs)
  if len(xs) < 2:
    return m, None
  var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
  return m, (var / len(xs)) ** 0.5


ROWS = [("acc turn 1", lambda b: b["acc_by_turn"][0]),
        ("acc turn 2", lambda b: b["acc_by_turn"][1] if len(b["acc_by_turn"]) > 1 else None),
        ("acc turn 3", lambda b: b["acc_by_turn"][2] if len(b["acc_by_turn"]) > 2 else None),
        ("turns used", lambda b: b["turns_mean"]),
        ("best-of-T", lambda b: b["best_of_T"]),
        ("pass@1", lambda b: b["pass_at_k"].get("1")),
        ("pass@8", lambda b: b["pass_at_k"].get("8")),
        ("critic AUC", lambda b: b["critic"]["auc"]),
        ("McNemar p, loop vs turn 1", lambda b: (b.get("mcnemar_p") or {}).get("loop_vs_turn1"))]


def aggregate(summaries: list[dict]) -> dict:
  """{stage: {row: {"mean", "se", "seeds": [per seed]}}} over several seeds' summary.json
  (the same test problems: a seed changes initialisation, sampling and data order)."""
  out = {"seeds": [s.get("seed") for s in summaries], "num": [s.get("num") for s in summaries]}
  for stage in STAGES:
    have = [s[stage] for s in summaries if stage in s]
    if len(have) != len(summaries):
      continue
    out[stage] = {}
    for name, get in ROWS:
      vals = [get(b) for b in have]
      m, se = _mean_se(vals)
      out[stage][name] = {"mean": m, "se": se, "seeds": vals}
  return out


def table(agg: dict) -> str:
  """Markdown: a row per figure, a column per stage, mean ± standard error over seeds."""
  stages = [s for s in STAGES if s in agg]
  fmt = lambda c: ("-" if c["mean"] is None else f"{c['mean']:.3f}"
                   + ("" if c["se"] is None else f" ± {c['se']:.3f}"))
  lines = ["| figure | " + " | ".join(stages) + " |", "|---|" + "---|" * len(stages)]
  for name, _ in ROWS:
    if name.startswith("McNemar"):  # a p-value per seed, not averaged
      cells = [", ".join("-" if v is None else f"{v:.2g}" for v in agg[s][name]["seeds"])
               for s in stages]
    else:
      cells = [fmt(agg[s][name]) for s in stages]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--size", default="small", choices=sorted(SIZES))
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--stages", default=",".join(STAGES),
                 help=f"comma-separated, of {','.join(STAGES)}")
  p.add_argument("--num", type=int, default=None, help="test problems (default: by size)")
  p.add_argument("--aggregate", default=None,
                 help="comma-separated summary.json files of several seeds: writes "
                      "<workdir>/aggregate.json and prints the mean ± SE table")
  a = p.parse_args(argv)
  if a.aggregate:
    paths = [x for x in a.aggregate.split(",") if x]
    missing = [x for x in paths if not os.path.exists(x)]
    if missing:
      sys.exit(f"error: no summary file {missing}; run the seeds first.")
    summaries = []
    for x in paths:
      with open(x) as f:
        summaries.append(json.load(f))
    agg = aggregate(summaries)
    os.makedirs(a.workdir, exist_ok=True)
    with open(os.path.join(a.workdir, "aggregate.json"), "w") as f:
      json.dump(agg, f, indent=1)
    print(table(agg))
    return
  stages = [s for s in a.stages.split(",") if s]
  bad = [s for s in stages if s not in STAGES]
  if bad:
    sys.exit(f"error: unknown stage(s) {bad}; choose from {', '.join(STAGES)}.")
  run(a.workdir, a.size, a.seed, stages, a.num)


if __name__ == "__main__":
  main()
