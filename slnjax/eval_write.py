"""Writes an evaluation report (slnjax/eval_report.py): <stem>.json, <stem>.md, <stem>.png and,
when inference FLOPs were counted, <stem>_flops.png (matplotlib, Agg backend)."""
from __future__ import annotations

import json
import os


def _pct(x) -> str:
  return "–" if x is None else f"{100 * x:.1f}"


def _acc_se(d) -> str:
  if d is None:
    return "–"
  se = d.get("se")
  return _pct(d["acc"]) + ("" if se is None else f" ± {100 * se:.1f}")


def _row(name: str, s: dict, T: int) -> str:
  cells = [name, str(s["n"]), "–" if s["turns_mean"] is None else f"{s['turns_mean']:.2f}"]
  cells += [_pct(a) for a in s["acc_by_turn"]]
  retry = s["retry_no_feedback"]
  cells += [_acc_se(s["best_of_T"]), _acc_se(s["majority_T"]),
            "–" if retry is None else _pct(retry["acc"])]
  cells += [_pct(s["pass_at_k"][k]["acc"]) if k in s["pass_at_k"] else "–"
            for k in ("1", "2", "4", "8")]
  del T
  return "| " + " | ".join(cells) + " |"


def markdown(r: dict) -> str:
  T = r["T"]
  head = (["problems", "n", "turns"] + [f"acc@{t}" for t in range(1, T + 1)]
          + [f"best-of-{T}", f"majority-{T}", "retry, no feedback"]
          + [f"pass@{k}" for k in (1, 2, 4, 8)])
  lines = [f"# Evaluation: step {r['step']}, split {r['split']} ({r['kind']}, loop mode "
           f"{r['loop_mode']}, T = {T})", "",
           "Accuracies in %, ± one standard error. acc@t: the answer held after turn t (a "
           "dialogue that halted keeps its last answer); turns: mean turns used; best-of/"
           f"majority/pass@k from {r['samples']} first turns sampled at temperature 1; retry: "
           "the loop with the critic's score fed back as a neutral 0.5.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head), _row("all", r, T)]
  for axis, rows in r["by_bucket"].items():
    lines += [_row(f"{axis} {v}", s, T) for v, s in rows.items()]
  f = r["flips"]
  if f["wrong_to_right"]:
    lines += ["", "| transition | wrong→right | right→wrong | changed when wrong | "
              "edit distance | continued |", "|---|---|---|---|---|---|"]
    for t in range(len(f["wrong_to_right"])):
      ed = f["edit_distance"][t]
      lines.append(f"| {t + 1}→{t + 2} | {_pct(f['wrong_to_right'][t])} | "
                   f"{_pct(f['right_to_wrong'][t])} | {_pct(f['changed_when_wrong'][t])} | "
                   f"{'–' if ed is None else f'{ed:.2f}'} | {f['continued'][t]} |")
  lines += ["", "| paired test (McNemar) | loop right, other wrong | loop wrong, other right "
            "| p | method |", "|---|---|---|---|---|"]
  for name, m in r["mcnemar"].items():
    lines.append(f"| {name} | {m['b']} | {m['c']} | {m['p']:.3g} | {m['method']} |")
  c = r["critic"]
  if c is not None:
    num = lambda x: "–" if x is None else f"{x:.3f}"
    lines += ["", "| critic | turns | precision | recall | AUC | threshold (precision ≥ 99%, "
              f"on {c['threshold_split']}) | precision / recall there |", "|---|---|---|---|---|---|---|",
              f"| at {c['threshold']:g} | {c['turns']} | {num(c['precision'])} | "
              f"{num(c['recall'])} | {num(c['auc'])} | {num(c['threshold_p99'])} | "
              f"{num(c['precision_at_p99'])} / {num(c['recall_at_p99'])} |"]
  fl = r.get("inference_flops_per_example")
  lines += ["", "Inference FLOPs per example: " + (
      "not counted (slnjax.flops is not available)" if fl is None else
      ", ".join(f"{k} {v:.3g}" for k, v in fl.items() if k != "loop_by_turn"))
      + "; training FLOPs: " + ("not counted" if r.get("train_flops") is None
                                else f"{r['train_flops']:.3g}") + "."]
  return "\n".join(lines) + "\n"


def plots(r: dict, stem_path: str) -> list[str]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  T, out = r["T"], []
  turns = list(range(1, T + 1))
  fig, ax = plt.subplots(figsize=(6, 4))
  se = [0.0 if s is None else s for s in r["acc_by_turn_se"]]
  ax.errorbar(turns, r["acc_by_turn"], yerr=se, marker="o", label="loop (acc@t)")
  k = max(int(k) for k in r["pass_at_k"] if int(k) <= T)
  lines = {f"best-of-{T}": r["best_of_T"], f"majority-{T}": r["majority_T"],
           "retry, no feedback": r["retry_no_feedback"], f"pass@{k} (oracle)":
           r["pass_at_k"][str(k)]}
  for (name, d), style in zip(lines.items(), ("--", "-.", ":", (0, (1, 3)))):
    if d is not None:
      ax.axhline(d["acc"], linestyle=style, color="gray", label=name)
  ax.set(xlabel="turn", ylabel="accuracy", ylim=(-0.02, 1.02), xticks=turns,
         title=f"{r['kind']}, step {r['step']}, {r['split']} (n={r['n']})")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(stem_path + ".png", dpi=100)
  plt.close(fig)
  out.append(stem_path + ".png")
  fl = r.get("inference_flops_per_example")
  if fl:
    acc = {"loop": r["acc_loop"], "turn1": r["acc_turn1"]}
    for k in ("best_of_T", "majority_T", "retry_no_feedback"):
      if r.get(k) is not None:
        acc[k] = r[k]["acc"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(fl["loop_by_turn"], r["acc_by_turn"], marker="o", label="loop, stopped after turn t")
    for name, v in fl.items():
      if name in acc and name not in ("loop", "turn1"):
        ax.scatter([v], [acc[name]], marker="s", label=name)
    ax.set(xscale="log", xlabel="inference FLOPs per example", ylabel="accuracy",
           title=f"{r['kind']}, step {r['step']}, {r['split']} (n={r['n']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(stem_path + "_flops.png", dpi=100)
    plt.close(fig)
    out.append(stem_path + "_flops.png")
  return out


def write_all(r: dict, workdir: str, stem: str = "eval") -> list[str]:
  """Writes the report's files into workdir; returns their paths."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, stem)
  with open(path + ".json", "w") as f:
    json.dump(r, f, indent=1)
  with open(path + ".md", "w") as f:
    f.write(markdown(r))
  return [path + ".json", path + ".md"] + plots(r, path)
