"""Internal: the numbers of the evaluation protocols, each written once (imports nothing).

The kNN monitor of `train.py`, `evaluate.py --protocol=knn`, their flags' defaults and the texts
that describe the protocol all read them from here (docs/algorithm.md §6).
"""

# Weighted kNN (InstDisc's protocol, as solo-learn's and lightly's monitors): the k train images
# most similar to a query (cosine) vote for their class with weight exp(similarity / T).
KNN_NEIGHBOURS = 200
KNN_TEMPERATURE = 0.1
# The few-label kNN monitor (--knn_labels_per_class): the mean over this many seeded
# class-balanced draws of the labelled images.
FEW_LABEL_DRAWS = 5
# Images per batch when an encoder's features are extracted for a kNN evaluation; the kNN
# monitor's memory bank is a whole number of such batches.
FEATURE_BATCH_SIZE = 256


def knn_description(k=KNN_NEIGHBOURS, temperature=KNN_TEMPERATURE) -> str:
    """The protocol in a few words: `"kNN (k=200, T=0.1)"`."""
    return f"kNN (k={k}, T={temperature:g})"
