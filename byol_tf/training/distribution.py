"""Internal: distribution strategies of a run and which process writes its files (the chief)."""

import json
import os
from typing import Any

import tensorflow as tf

from byol_tf.settings.choices import STRATEGIES


def make_strategy(name, tpu=None) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` named by `--strategy`.

    Call it before any other TensorFlow op: `MultiWorkerMirroredStrategy` configures collective
    ops, which TensorFlow accepts only before its runtime starts. Only `auto` and `one_device`
    look at the local devices (that starts the runtime), after the choice of strategy.

    Args:
        name: one of `STRATEGIES`; `multi_worker` reads the cluster from `TF_CONFIG`.
        tpu: TPU name or `grpc://` address, for `tpu`.

    Raises:
        ValueError: for an unknown name; for `multi_worker`, one line when `TF_CONFIG` is
            unset, not JSON or describes no cluster (`cluster_config`).
    """
    if name == "multi_worker":
        cluster_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name in ("auto", "one_device"):
        gpus = tf.config.list_logical_devices("GPU")
        if name == "one_device":
            return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    raise ValueError(
        f"--strategy must be one of {', '.join(STRATEGIES)}. Received: --strategy={name}"
    )


def cluster_config() -> dict[str, Any]:
    """The cluster `--strategy=multi_worker` trains on: `TF_CONFIG`, checked.

    Returns:
        `TF_CONFIG` parsed: a dict with a non-empty `cluster` and this process's `task`.

    Raises:
        ValueError: one line naming `TF_CONFIG` and what is wrong with it (unset, not JSON,
            without a cluster or a task); without it TensorFlow would train alone or fail later.
    """
    text = os.environ.get("TF_CONFIG")
    usage = (
        'set it to {"cluster": {"worker": ["host0:port", ...]}, "task": {"type": "worker", '
        '"index": i}} on every machine (README "Several machines")'
    )
    if not text:
        raise ValueError(
            f"--strategy=multi_worker needs the cluster in the TF_CONFIG environment variable, "
            f"which is not set: {usage}."
        )
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ValueError(
            f"TF_CONFIG is not JSON ({str(error).splitlines()[0]}); --strategy=multi_worker "
            f"reads the cluster from it: {usage}."
        ) from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
        raise ValueError(
            f"TF_CONFIG={json.dumps(config)} describes no cluster and task for "
            "--strategy=multi_worker: "
            f"{usage}."
        )
    return config


def ignored_cluster_note(name) -> str | None:
    """The line to print when `TF_CONFIG` describes a cluster that strategy `name` leaves
    unused (all but `multi_worker` and `tpu`), else None.

    Such a process trains alone, on its own devices, and writes the run's files itself.
    """
    if name in ("multi_worker", "tpu"):
        return None
    text = os.environ.get("TF_CONFIG") or "{}"
    try:
        cluster = json.loads(text).get("cluster")
    except ValueError:
        return f"Note: TF_CONFIG is not JSON; --strategy={name} ignores it and trains alone."
    except AttributeError:  # not a JSON object
        return None
    if not isinstance(cluster, dict) or not cluster:
        return None
    tasks = sum(len(v) if isinstance(v, (list, dict)) else 1 for v in cluster.values())
    return (
        f"Note: TF_CONFIG describes a cluster of {tasks} tasks, which --strategy={name} "
        "ignores: this process trains alone on this machine's devices. Pass "
        "--strategy=multi_worker to train across the cluster."
    )


def _chief(jobs, task_type, task_id):
    """The chief is task `chief:0`, else `worker:0`; a process outside any cluster is one."""
    if not jobs or task_type is None:
        return True
    if "chief" in jobs:
        return task_type == "chief"
    return task_type == "worker" and int(task_id or 0) == 0


def is_chief(strategy=None) -> bool:
    """Whether this process writes the run's files (checkpoints, TensorBoard, summary, export).

    Every process of a multi-worker run executes the same program; only the chief's files are
    kept. Single-process strategies are always chief.

    Args:
        strategy: a `tf.distribute.Strategy`; None reads the cluster from `TF_CONFIG` (usable
            before the strategy exists).
    """
    if strategy is None:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task = tf_config.get("task", {})
        return _chief(tf_config.get("cluster", {}), task.get("type"), task.get("index"))
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
        return True  # one client process drives all TPU cores
    jobs = resolver.cluster_spec().jobs
    return _chief(jobs, resolver.task_type, resolver.task_id)
