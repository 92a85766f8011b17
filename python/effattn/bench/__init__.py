"""`python -m effattn bench`: problems, peers, timing, comparison and plots.

Each suite module (na.py, lightning.py) turns a device and a size preset into `Case`s: one
problem with the implementations to time on it (effattn and every peer available in this
process). The runner times them all in one process, so ratios compare like with like.
"""
