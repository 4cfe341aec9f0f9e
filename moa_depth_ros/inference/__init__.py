"""Inference: numpy RGB in, metric depth out, on any backend.

``load_estimator(InferenceOptions(...))`` (``load.py``) is the one entry for files and
zero-shot models; ``DepthEstimator(backend)`` (``estimator.py``) runs any ``Backend``
(``torch_backend.py``, ``onnxruntime_backend.py``, ...) with the same pre- and
post-processing. A backend is one ``<name>_backend.py`` file with ``open_backend(options)``.
"""
