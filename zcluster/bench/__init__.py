"""``zcluster bench``: zcluster next to the raw pyzmq limit, in the same run, as ratios.

- ``workload``: the message and how many; ``stats``: medians, percentiles, ratios;
- ``processes``: worker processes, always reaped; ``samples``: what a measurement gives;
- ``raw``: the raw pyzmq limit; ``pubsub``, ``direct``, ``rtt``, ``membership``,
  ``memory``: the zcluster sides (``tally`` and ``steps`` are their shared parts);
- ``scenarios``: the catalogue; ``runner``: repetitions, alternating raw and zcluster;
- ``report``: the table and the JSON; ``main``: the command.
"""

#: the scenario groups, in the order they run (``--scenarios``)
GROUPS = ("pubsub", "direct", "rtt", "payload", "membership", "memory")
