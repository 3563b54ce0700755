"""Parameter-free local-feature tests read straight from the feature stores (no backbone runs).

After "Analyzing Local Representations of Self-supervised Vision Transformers" (Vanyan et al., 2024):
k-NN patch labelling layer by layer (`knn`), instance retrieval of augmented copies (`retrieval`),
and DINO-style video label propagation (`propagation`) scored by the DAVIS J&F measure (`jf`).
"""
