"""BYOL pretraining binary: `python train.py --flagfile=configs/cifar10.flags` (byol_tf.cli.train).

With no flags it runs the offline demo (Fashion-MNIST subset shipped in the package).
"""

from byol_tf.cli.train import FLAGS, main, run  # noqa: F401

if __name__ == "__main__":
    run("train.py")
