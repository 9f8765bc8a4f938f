"""What runs on the training node: recipe -> data -> HF Trainer, with checkpoints published to
the bucket by the vops protocol, exact resume, preemption notices and segment heartbeats.

Entry points: ``python -m vicuna_ops.train`` (the node) and ``vicuna_ops.train.local.run_local``
(``vops train --local``). Importing this package imports nothing heavy.
"""
