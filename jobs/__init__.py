"""Entry points: the ``ghostnet-pipeline`` CLI, and the modules a Ray job runs (``python -m jobs.run``,
``python -m jobs.nightly``)."""
