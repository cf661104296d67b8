"""The inner dialogue loop (IDL): the prompt's prefill, two drivers of turn.py's turn, and
the teacher-forced replay of a transcript.

Each lobe's context is the whole dialogue so far (append-only), which makes the paper's
concat(x, x_left^t, y_right^t) inputs a window of it. The modules, read bottom-up (the
names below are re-exported here: ``loop.LoopConfig``, ``loop.rollout``, ...):

  config.py   LoopConfig, DialogueSpec, the HALT_* codes
  decode.py   one lobe's side: emitting a token, a turn's units, ingesting the other's turn
  turn.py     one turn as a step program (appendonly.Plain / Loop segments), stopping rules
  prefill.py  the prompt (and a memory prefix) into the caches, as a one-segment program
  drivers.py  rollout (while_loop) and unroll (differentiable; owns the reverse scheme)
  replay.py   the left lobe's context rebuilt from a transcript; teacher-forced log-probs
"""
from slnjax.loop.config import (HALT_AGREEMENT, HALT_LIMIT, HALT_NAMES, HALT_NONE, HALT_STOP,
                                HALT_THRESHOLD, DialogueSpec, LoopConfig)
from slnjax.loop import decode
from slnjax.loop.turn import turn, turn_program
from slnjax.loop.prefill import prefill, prefill_inputs, prefill_program
from slnjax.loop.drivers import Dialogue, rollout, unroll
from slnjax.loop.replay import left_context, replay_logp
