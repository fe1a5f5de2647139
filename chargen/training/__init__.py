"""The training wing: the trainer (truncated BPTT, evaluation, checkpoints), run setup, sizing, torchrun ranks.

Named `training`, not `train`, so that `chargen.train(...)`, the function that runs it, stays callable.
"""
