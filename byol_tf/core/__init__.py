"""The BYOL algorithm (Grill et al. 2020): the `BYOL` keras.Model and its train step, the encoders
and MLP heads, the regression loss, the target network and its EMA, the two view passes, the
structure of a training batch, the LARS and AdamW optimisers and the learning-rate and τ schedules.

May import `byol_tf.settings` and `byol_tf.views` (the train step draws its views on the
accelerator); knows nothing of files, data sources or programs.
"""

from byol_tf import submodules_on_first_use

__getattr__ = submodules_on_first_use(__name__)
