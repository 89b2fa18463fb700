"""Capabilities: what a node understands beyond protocol revision 1.0.

Every node announces its set in each HEARTBEAT and SYNC it sends; a node
uses a feature towards a peer only once that peer has announced the
capability defining it (``docs/protocol.md``, compatibility and extensions).
"""

from __future__ import annotations

from zcluster.protocol.messages import Capabilities

#: accepts extra header elements, extra body fields and extra member-record fields
FIELDS = "fields"
#: reads publications sent as one frame (revision 1.2): subscribes to the ``u`` topic prefix
ONE_FRAME = "oneframe"
#: membership by probing and gossip (revision 1.2): needs no heartbeat on the control topic
SWIM = "swim"

#: reads DATA_BATCH (revision 1.3): several guaranteed direct messages in one
BATCH = "batch"

#: a leaving publisher waits for its subscribers' FLUSHED (revision 1.4): reads FLUSH on its
#: personal frame and answers it
DRAIN = "drain"

#: reads REFUSE (revision 1.4): a seed may refuse a join, saying why, instead of ignoring it
REFUSE = "refuse"

#: reads LISTEN's prefixes (revision 1.4): counts a subscriber of a prefix as one of every
#: topic that starts with it
PREFIX = "prefix"

#: reads CAUSAL messages and publications (revision 1.6): guarantee code 4, whose payload
#: frame starts with the message's dependencies
CAUSAL = "causal"

#: takes part in transactions (revision 1.6): reads PREPARE and TXN
TXN = "txn"

#: what this release announces, sorted
SUPPORTED: Capabilities = (BATCH, CAUSAL, DRAIN, FIELDS, ONE_FRAME, PREFIX, REFUSE, SWIM, TXN)
