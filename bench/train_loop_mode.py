"""One mode of bench/gpu_train_loop.py, in its own process: the model, the pipeline and `fit`,
timed step by step (see that script's docstring)."""

import argparse
import statistics
import time

import harness
from gpu_monitor import GPUMonitor, device_name

# The recipe's schedules are laid out for a paper-length ImageNet run (they do not change the
# step's cost): the official 300-epoch preset (configs/imagenet.flags).
PAPER_EPOCHS, IMAGENET_IMAGES = 300, 1_281_167
PROJECTION_DIM, HIDDEN_DIM = 256, 4096


def step_clock(keras, warmup_steps, steps, monitor):
    """A callback recording the wall time at the end of the last warm-up step and of each timed
    step (see the module docstring); place it after `TargetEMA`."""

    class StepClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.first, self.last = warmup_steps - 1, warmup_steps + steps - 1
            self.times = []
            self.cpu = {}
            self.load = {}

        def on_train_batch_end(self, batch, logs=None):
            if batch < self.first:
                return
            float(logs["loss"])  # a Python number: the step's outputs reached the host
            if batch in (self.first, self.last):
                # TargetEMA (the callback before this one) dispatched the step's target update
                # without waiting for it: wait here, so the window holds exactly `steps` updates.
                self.model.target_projector.weights[-1].numpy()
            self.times.append(time.perf_counter())
            if batch == self.first:
                self.cpu["start"], self.load["start"] = time.process_time(), harness.load_average()
                monitor.start()
            elif batch == self.last:
                self.cpu["end"], self.load["end"] = time.process_time(), harness.load_average()
                monitor.stop()

    return StepClock()


def _model(args, recipe, augmentation):
    """The paper's BYOL model for `args` (ResNet of `--encoder_depth`, heads 4096 → 256)."""
    from byol_tf import BYOL
    from byol_tf.core import networks

    size = args.image_size
    encoder = networks.resnet(
        args.encoder_depth, input_shape=(size, size, 3),
        zero_init_residual=recipe.zero_init_residual, name="encoder",
    )  # fmt: skip
    return BYOL(
        encoder, PROJECTION_DIM, HIDDEN_DIM, image_shape=(size, size, 3),
        head_output_bias=recipe.head_output_bias, augmentation=augmentation,
    )  # fmt: skip


def build(**options):
    """One mode's model and pipeline in this process (bench/harness); the round runs `fit`.

    Returns:
        A `harness.Workload` whose round gives the mode's result dict (`summarise_steps`,
        GPU figures, host CPU use; see the module docstring).
    """
    started = time.perf_counter()
    args = argparse.Namespace(**options)
    import keras
    import tensorflow as tf

    from byol_tf.data import pipelines
    from byol_tf.training import recipes

    gpus = tf.config.list_physical_devices("GPU")
    mixed = bool(gpus) if args.mixed_precision is None else args.mixed_precision
    policy = args.policy if mixed else "float32"
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(policy)
    recipe = recipes.paper(PAPER_EPOCHS)
    overrides = {"crop_sampler": recipe.crop_sampler}
    dataset = pipelines.pretrain_dataset(
        args.folder, args.batch_size, args.image_size, seed=0, augment_overrides=overrides,
        augment_on=args.mode,
    )  # fmt: skip
    augmentation = None
    if args.mode == "device":
        augmentation = pipelines.train_step_augmentation(
            args.folder, args.image_size, augment_overrides=overrides
        )
    model = _model(args, recipe, augmentation)
    steps_per_epoch = IMAGENET_IMAGES // args.batch_size
    plan = recipes.build(recipe, PAPER_EPOCHS * steps_per_epoch, steps_per_epoch, args.batch_size)
    model.compile(optimizer=plan.optimizer, jit_compile=True, steps_per_execution=1)
    plan.optimizer.build(model.trainable_variables)
    facts = dict(
        mode=args.mode, device_name=device_name(tf, gpus), policy=policy, jit_compile=True,
        versions={"tensorflow": tf.__version__, "keras": keras.__version__},
    )  # fmt: skip

    def run():
        result = _fit(keras, tf, model, dataset, plan, args, gpus)
        return dict(result, **facts, seconds_to_first_timed_step=result["first"] - started)

    return harness.Workload(run=run, info=dict(facts))


def _fit(keras, tf, model, dataset, plan, args, gpus):
    """`fit` for the warm-up and timed steps; the timed window's figures."""
    monitor = GPUMonitor()
    clock = step_clock(keras, args.warmup_steps, args.steps, monitor)
    history = model.fit(
        dataset, epochs=1, steps_per_epoch=args.warmup_steps + args.steps,
        callbacks=[plan.target_ema, clock], verbose=0,
    )  # fmt: skip
    result = summarise_steps(clock.times, args.batch_size)
    seconds = clock.times[-1] - clock.times[0]
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20 if gpus else "n/a"
    result.update(monitor.summary())
    result.update(
        seconds=seconds,
        first=clock.times[0],
        host_cpu_use=(clock.cpu["end"] - clock.cpu["start"]) / seconds,
        load_average=clock.load,
        tf_peak_gpu_memory_mib=peak,
        final_loss=history.history["loss"][-1],
    )
    return result


def summarise_steps(times, batch_size):
    """images/s over the timed window and its second half, and step times, from the wall times
    at the end of the last warm-up step and of each timed step."""
    intervals = [b - a for a, b in zip(times, times[1:], strict=False)]
    half = len(intervals) // 2
    second_half = intervals[half:]
    return {
        "images_per_s": batch_size * len(intervals) / (times[-1] - times[0]),
        "images_per_s_second_half": batch_size * len(second_half) / sum(second_half),
        "step_ms_median": 1000 * statistics.median(intervals),
        "step_ms": [1000 * s for s in intervals],
    }
