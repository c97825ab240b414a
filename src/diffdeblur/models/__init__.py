"""Network architectures: plain ``nn.Module`` classes, one file per architecture.

Each architecture module lists its named presets in ``PRESETS`` (see :mod:`.protocol`); the
registry one floor up (:mod:`diffdeblur.registry`) collects them. Nothing registers on import.
"""
