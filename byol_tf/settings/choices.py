"""Internal: the names of the enumerated choices, each written once (imports nothing).

Settings (the flags' enums), the library modules that check their arguments and the tests read
them from here, so a new choice is added in one place.
"""

ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200")
PRESETS = ("imagenet", "small")  # the view presets of byol_tf.views.augment.PRESETS
OPTIMIZERS = ("lars", "adamw")
RECIPE_NAMES = ("auto", "paper", "official_code", "small_data", "short")  # byol_tf.training.recipes
SCHEDULE_NAMES = ("cosine", "constant")  # of the learning rate and of τ (byol_tf.core.schedules)
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
PROTOCOLS = ("linear", "linear_official", "knn", "finetune")
CROP_SAMPLERS = ("rejection", "clamped")  # how a random-resized crop box is drawn
# How an export's serving signatures take the centre square (byol_tf.serving.export): resize,
# then crop (byol_tf's evaluations), or crop, then resize without antialiasing (the official
# evaluation).
SERVING_PREPROCESSINGS = ("resize_center_crop", "official_center_crop")
AUGMENT_ON = ("host", "device")  # where the views are drawn (byol_tf.views.device_augment)
# How the blur pads the image: by reflection, or with zeros (the official 'SAME' convolution).
BLUR_PADDINGS = ("reflect", "zero")
# Convolution kernels' initialisation: Keras's He normal, or Haiku's default (the official code's:
# a truncated normal of std 1/sqrt(fan_in)).
KERNEL_INITIALIZERS = ("he_normal", "haiku")
# The linear_official protocol's budgets (byol_tf.evaluation.linear_official.LINEAR_PRESETS) and
# ways of choosing its learning rate: "paper", one classifier per rate on train minus a held-out
# part, chosen there (appendix C.1); "official", one rate on all of train (the official code's
# `TRAIN_AND_VALID` split).
LINEAR_PRESETS = ("small", "imagenet")
LINEAR_SELECTIONS = ("paper", "official")
