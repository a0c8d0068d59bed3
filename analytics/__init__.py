"""Reading what the pipeline committed: for analysts, notebooks and the ``query`` and ``report`` commands.

Depends on :mod:`pipeline` (layout, schema, run records); nothing in :mod:`pipeline` imports it.
"""

from analytics.output import Output, Selection

__all__ = ["Output", "Selection"]
