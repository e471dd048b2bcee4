"""The pipeline skeleton (detector -> selector -> segmenter), prompt parsing, the selector and ``lite``.

Model backends (``smartseg.worker.models``) build on it; it imports none of them.
"""
