"""Evaluation of a pretrained encoder: `byol-evaluate --model_dir=runs/demo --protocol=knn`."""

import json
import os
from typing import NoReturn

from byol_tf.cli import flag_definitions, runner
from byol_tf.runs import run_folder
from byol_tf.settings import program_configs, protocols

flag_definitions.define_flags(program_configs.EvalConfig)
FLAGS = flag_definitions.FLAGS
_NAMES = {
    "knn": protocols.knn_description(),
    "linear": "offline linear",
    "linear_official": "linear (paper protocol)",
    "finetune": "fine-tune",
}


def main(argv) -> int:
    """Evaluates, prints top-1 / top-5 and writes the results JSON."""
    runner.check_no_arguments(argv)
    try:
        opts = flag_definitions.from_flags(FLAGS, program_configs.EvalConfig)
        output = _output(opts)  # checked before the evaluation, which may take hours
        from byol_tf.evaluation.evaluate_run import evaluate  # TensorFlow loads here

        results = evaluate(opts)
        _write(output, results)
    except (ValueError, FileNotFoundError) as error:
        runner.fail(argv, error)
    except Exception as error:  # a corrupt image file met by the input pipeline
        runner.exit_if_unreadable_image(argv, error)
        raise
    print(f"{_description(opts.protocol, results)} on {results['dataset']}/"
          f"{results['test_split']}: top-1 {results['top1']:.2%}, top-5 {results['top5']:.2%} "
          f"-> {output}")  # fmt: skip
    return 0


def _description(protocol, results):
    """The protocol's name; kNN's with the k it used (at most the train examples there are)."""
    if protocol != "knn":
        return _NAMES[protocol]
    k, default = results["k"], protocols.KNN_NEIGHBOURS
    description = protocols.knn_description(k, results["temperature"])
    if k < default:
        clipped = f"; k={default} clipped to the {results['num_train']} train examples)"
        description = description[:-1] + clipped
    return description


def _output(opts):
    """The results file: --output, else beside what is evaluated (the run folder, else the
    export or checkpoint; never the current directory), checked to be writable."""
    if opts.output:
        return _check_writable(opts.output, f"--output={opts.output}")
    folder = opts.model_dir or opts.saved_model or os.path.dirname(opts.checkpoint)
    output = os.path.join(folder, f"eval_{opts.protocol}.json")
    flag = "--model_dir" if opts.model_dir else "--saved_model" if opts.saved_model else ""
    where = f"{flag}={folder}" if flag else f"the folder of --checkpoint={opts.checkpoint}"
    return _check_writable(output, f"The results file {output} (in {where})", "; pass --output")


def _check_writable(path, name, advice=""):
    """`path` when a file can be written there (nothing is created now); else ValueError."""
    if os.path.isdir(path):
        raise ValueError(f"{name} is a folder; expected the path of a JSON file to write{advice}")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):  # written with its missing folders
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"{name} cannot be written: {folder} is a file, not a folder{advice}")
    target = path if os.path.exists(path) else folder
    if not os.access(target, os.W_OK):
        raise ValueError(f"{name} cannot be written: {target} is not writable{advice}")
    return path


def _write(output, results):
    """Writes the results JSON, creating its folder."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "w") as handle:
            json.dump(results, handle, indent=2)
    except OSError as error:  # lost between the check and now (disk full, permission)
        raise ValueError(f"Cannot write {output}: {run_folder.reason(error)}") from None


def run(program="byol-evaluate") -> NoReturn:
    """The `byol-evaluate` console script; `python evaluate.py` runs it as `evaluate.py`."""
    runner.run(main, program, program_configs.EvalConfig)
