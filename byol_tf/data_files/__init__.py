"""Data shipped with byol_tf: the offline demo set (a Fashion-MNIST subset) and its licence."""
