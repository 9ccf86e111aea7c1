"""Inference that stays valid with few pilot townships (randomization inference, wild
cluster bootstrap, CR2, placebo in space) and size and power by simulation."""
