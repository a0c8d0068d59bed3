"""Entry points: the ``ghostnet-pipeline`` CLI and the modules a Ray job runs (``python -m jobs.label``)."""
