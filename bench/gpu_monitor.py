"""The GPU beside a benchmark: nvidia-smi polled in a background thread, the device's name."""

import os
import shutil
import statistics
import subprocess
import threading
import time

NVIDIA_SMI_QUERY = (
    "--query-gpu=utilization.gpu,memory.used,name",
    "--format=csv,noheader,nounits",
)
POLL_SECONDS = 0.5


def nvidia_smi_command():
    """The nvidia-smi query for the GPU this process uses (the first of CUDA_VISIBLE_DEVICES,
    else GPU 0), or None when nvidia-smi is not installed or the GPUs are hidden."""
    path = shutil.which("nvidia-smi")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    first = "0" if visible is None else visible.split(",")[0].strip()
    if path is None or first in ("", "-1"):
        return None
    return [path, *NVIDIA_SMI_QUERY, f"--id={first}"]


def query_gpu(command):
    """`(utilisation %, memory used MiB, name)` from one nvidia-smi call, or None."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=5)
        utilisation, memory, name = result.stdout.strip().splitlines()[0].split(",", 2)
        return float(utilisation), float(memory), name.strip()
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class GPUMonitor:
    """Polls nvidia-smi every `POLL_SECONDS` in a background thread between `start` and `stop`."""

    def __init__(self):
        self.command = nvidia_smi_command()
        self.samples = []
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        if self.command is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()

    def _poll(self):
        start, polls = time.perf_counter(), 0
        while not self._stop.is_set():
            sample = query_gpu(self.command)
            if sample is not None:
                self.samples.append(sample)
            polls += 1
            self._stop.wait(max(0.0, start + polls * POLL_SECONDS - time.perf_counter()))

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self):
        """Mean utilisation and highest memory use over the samples ("n/a" without any)."""
        if not self.samples:
            return {"gpu_util_percent": "n/a", "gpu_memory_used_mib": "n/a", "gpu_samples": 0}
        return {
            "gpu_util_percent": statistics.mean(s[0] for s in self.samples),
            "gpu_memory_used_mib": max(s[1] for s in self.samples),
            "gpu_samples": len(self.samples),
        }


def device_name(tf, gpus):
    """The accelerator's name: TensorFlow's device details, else nvidia-smi's, else the CPU's."""
    if gpus:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
        command = nvidia_smi_command()
        sample = query_gpu(command) if command else None
        return name or (sample[2] if sample else "GPU")
    from byol_tf.training import hardware

    return f"CPU: {hardware.cpu_model()}"
