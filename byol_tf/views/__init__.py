"""The images a network sees: batched, XLA-compilable image operations, the seeded random numbers
behind them, BYOL's two view distributions T and T' (`augment`, drawn on the host or, by
`device_augment.ViewAugmentation`, inside the train step) and the crops of the evaluations and
of serving (`eval_crops`).

May import `byol_tf.settings` only.
"""

from byol_tf import submodules_on_first_use

__getattr__ = submodules_on_first_use(__name__)
