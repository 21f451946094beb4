"""The console scripts of setup.cfg run the programs of byol_tf.cli under their own names."""

import configparser
import importlib
import inspect
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_console_scripts_run_the_programs_under_their_names():
    setup = configparser.ConfigParser()
    setup.read(os.path.join(ROOT, "setup.cfg"))
    lines = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    scripts = dict(line.replace(" ", "").split("=") for line in lines)
    assert set(scripts) == {"byol-train", "byol-evaluate", "byol-export"}
    for name, target in scripts.items():
        module, function = target.split(":")
        run = getattr(importlib.import_module(module), function)
        assert inspect.signature(run).parameters["program"].default == name
        assert callable(importlib.import_module(module).main)
