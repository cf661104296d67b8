"""Training procedures of the paper, one module each, registered by name (see base.py).

    sft               eq. 1            critic_bce        eq. 7, PGD (§5.5)
    ppo, ppo_verifier eq. 8 (+ eq. 2)  actor_critic_td   TD variant after Alg. 2
    reinforce, rloo (+ _verifier)      bptt              eq. 3-4, truncated BPTT
    gan               Alg. 1           self_play         §5.4
    spin              Alg. 3
    wide, wide_ppo    wide SLNs (rows E, G): PonderNet halting / REINFORCE, PPO on the gate
    verifier_critic   critic BCE on the verifier's labels of on-policy turns
    revision_sft, revision_rl  later turns trained to revise (own wrong attempts; RLOO)
"""
from slnjax.objectives.base import (REGISTRY, Context, Objective, batch_valid, dialogue, get,
                                    hparams, make_rollout, register, sample)
from slnjax.objectives import (actor_critic_td, bptt, critic_bce, gan, ppo, reinforce,
                               revision, self_play, sft, spin, verifier_critic, wide)
