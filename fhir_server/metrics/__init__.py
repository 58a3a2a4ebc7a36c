"""Prometheus metrics of the server (``GET /metrics``; docs/operations.md lists them).

- ``directory``: where the worker processes of ``serve`` keep their figures (multiprocess
  mode), prepared before any of them starts. It must not import ``prometheus_client``: the
  client chooses between in-process and multiprocess values when it is first imported.
- ``catalogue``: every metric, defined once, and the small functions the code calls to
  observe something.
- ``exposition``: the text a scrape gets, summed over every worker.
"""
