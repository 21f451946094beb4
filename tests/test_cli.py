"""The programs of byol_tf.cli: console scripts under their own names, a console without noise."""

import configparser
import importlib
import inspect
import os
import threading
from unittest import mock

from byol_tf.cli import console, programs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_console_scripts_run_the_programs_under_their_names():
    setup = configparser.ConfigParser()
    setup.read(os.path.join(ROOT, "setup.cfg"))
    lines = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    scripts = dict(line.replace(" ", "").split("=") for line in lines)
    assert set(scripts) == {"byol-train", "byol-evaluate", "byol-export", "byol-import"}
    for name, target in scripts.items():
        module, function = target.split(":")
        assert module == "byol_tf.cli.programs"  # loads the program with Ctrl-C handled
        with mock.patch.object(programs, "start") as start:
            getattr(programs, function)()
        [(program_module, program_name)] = [call.args for call in start.call_args_list]
        assert program_name == name
        program = importlib.import_module(f"byol_tf.cli.{program_module}")
        assert inspect.signature(program.run).parameters["program"].default == name
        assert callable(program.main)


NATIVE_NOISE = [
    b"2026-12-02 17:46:58.548757: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:31] Could not"
    b" find cuda drivers on your machine, GPU will not be used.",
    b"2026-12-02 17:46:58.548757: W tensorflow/core/framework/op_kernel.cc:1857] OP_REQUIRES",
    b"I0000 00:00:1796236476.276067   25580 device_compiler.h:196] Compiled cluster using XLA!  "
    b"This line is logged at most once for the lifetime of the process.",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"2026-12-02 17:46:58.548757: E external/local_xla/xla/stream_executor/cuda/cuda_platform.cc:"
    b"51] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    b"2026-12-03 23:10:39.571293: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:485]"
    b" Unable to register cuFFT factory: Attempting to register factory for plugin cuFFT when one"
    b" has already been registered",
]
KEPT = [
    b"train.py: error: --batch_size must be a positive int. Received: --batch_size=0",
    b"Traceback (most recent call last):",
    b"2026-12-02 17:46:58.548757: E tensorflow/core/framework/op_kernel.cc:1857] OOM",
    b"F0000 00:00:1796236476.276067   25580 check.cc:1] Check failed",
    b"warning: representation collapse suspected at epoch 3",
]


def test_console_filter_drops_native_info_lines_and_keeps_errors():
    os_pipe_in, os_pipe_out = os.pipe()
    sink_in, sink_out = os.pipe()
    writer = threading.Thread(target=console._pump, args=(os_pipe_in, sink_out))
    writer.start()
    os.write(os_pipe_out, b"\n".join(NATIVE_NOISE + KEPT) + b"\n")
    os.close(os_pipe_out)
    writer.join(timeout=10)
    os.close(sink_out)
    with os.fdopen(sink_in, "rb") as handle:
        assert handle.read().splitlines() == KEPT
