"""``zcluster bench``: zcluster next to the raw pyzmq limit, in the same run, as ratios.

- ``workload``: the message and how many; ``stats``: medians, percentiles, ratios;
- ``processes``: worker processes, always reaped; ``samples``: what a measurement gives;
- ``raw``: the raw pyzmq limit; ``pubsub``, ``direct``, ``rtt``, ``membership``,
  ``memory``: the zcluster sides (``tally`` and ``steps`` are their shared parts);
  ``modes``: both sides in a security mode, with throwaway keys;
- ``scenarios``: the catalogue; ``runner``: repetitions, alternating raw and zcluster;
- ``report``: the table and the JSON; ``costs``: a mode next to none, paired by
  repetition; ``main``: the command.
"""

#: the scenario groups a run has by default, in the order they run (``--scenarios``)
GROUPS = ("pubsub", "direct", "rtt", "payload", "membership", "memory")
#: groups run only when asked for (``--scenarios security``): fan-out and direct sends
#: in each security mode side by side, after the default ones
OPTIONAL_GROUPS = ("security",)
ALL_GROUPS = GROUPS + OPTIONAL_GROUPS
