# %% [markdown]
# # predhead in a notebook
#
# A script in percent-cell format (open it in Jupyter with jupytext, in VS Code or in
# Spyder as a notebook; or run it top to bottom with `python examples/notebook.py`).
# It draws two figures with matplotlib and saves them beside the working directory:
#
# 1. the analog of the paper's Figure 2: the rise and fall of `||E - I||_F` along the exact
#    population gradient flow, with the phase events `t1`, `t2`, `t3`, `t_end` marked;
# 2. the phase times against the dimension `d`.
#
# Install the package first: `pip install ./python` (docs/python.md).

# %%
import os

import matplotlib

if os.environ.get("MPLBACKEND") is None and not hasattr(__builtins__, "__IPYTHON__"):
    matplotlib.use("Agg")  # a plain `python` run writes files only
import matplotlib.pyplot as plt
import numpy as np

import predhead

OUT = os.environ.get("PREDHEAD_NOTEBOOK_OUT", ".")

# %% [markdown]
# ## The setting
# The contract's example setting (`../shared/contract.md`) with the paper's head
# (identity diagonal, trainable off-diagonal entries), batch normalization and stop-gradient.
# `predhead.Config` validates it with the binary's own reader: a bad value raises
# `ValueError` naming the field.

# %%
base = {
    "setting": {
        "dim": 50,
        "patches": 4,
        "feature_patches": 2,
        "alpha": [4.0, 1.0],
        "noise_std": 1.0,
        "neurons": 2,
    },
    "model": {"head": "identity-offdiag", "normalization": "batchnorm", "stop_gradient": True},
}
config = predhead.Config(base)
config.resolved["training"]  # the defaults filled in

# %% [markdown]
# ## Figure 2 analog: the rise and fall of `||E - I||_F`

# %%
run = predhead.flow(config, seed=1)
s = run.summary
print({k: s[k] for k in ("t1", "t2", "t3", "t_end", "outcome", "strong_neuron")})

traj = run.arrays  # one float64 array per column (run.trajectory: a DataFrame with pandas)
m = base["setting"]["neurons"]
E = np.stack([[traj[f"e_{j}_{r}"] for r in range(m)] for j in range(m)])  # (m, m, rows)
head_distance = np.sqrt(((E - np.eye(m)[:, :, None]) ** 2).sum(axis=(0, 1)))

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(traj["tau"], head_distance, label=r"$\|E - I\|_F$")
for key, style in (("t1", ":"), ("t2", "--"), ("t3", "-."), ("t_end", "-")):
    if s[key] is not None and s[key] > 0:
        ax.axvline(s[key], color="grey", linestyle=style, label=key)
ax.set_xscale("log")
ax.set_xlabel(r"flow time $\tau = \eta t$")
ax.set_ylabel(r"$\|E - I\|_F$")
ax.set_title(f"d = {base['setting']['dim']}: outcome {s['outcome']}")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(OUT, "figure2_analog.png"), dpi=120)

# %% [markdown]
# ## Phase times against `d`
# One flow per dimension from the exact reduced initialization (seed 0); its cost does not
# grow with `d`. The paper (Lemma 5.1) predicts `t1 = d^(2+o(1))`.

# %%
dims = [20, 50, 100, 200, 500, 1000]
times = {key: [] for key in ("t1", "t2", "t3", "t_end")}
for d in dims:
    cfg = {**base, "setting": {**base["setting"], "dim": d}}
    summary = predhead.flow(cfg, seed=0, trajectory=False).summary
    for key in times:
        times[key].append(np.nan if summary[key] is None else summary[key])

fig, ax = plt.subplots(figsize=(6, 3.5))
for key, values in times.items():
    ax.plot(dims, values, marker="o", label=key)
ax.plot(dims, [times["t1"][0] * (d / dims[0]) ** 2 for d in dims], "k:", label=r"$\propto d^2$")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("d")
ax.set_ylabel(r"flow time $\tau$")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(OUT, "phase_times_vs_d.png"), dpi=120)
times
