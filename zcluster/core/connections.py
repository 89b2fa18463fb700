"""Connections follow membership: a DEALER and a SUB connection to every live member."""

from __future__ import annotations

from zcluster.core import effects as fx
from zcluster.core.component import Component, NodeContext
from zcluster.protocol.members import Member, Tags


class Connections(Component):
    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        #: each connected member's addresses, incarnation and tags: a member that comes
        #: back at the same addresses is connected anew (its new run knows nothing of
        #: the old connection: a secured one says AUTH again; a new key is used)
        self._connected: dict[str, tuple[str, str, int, Tags]] = {}

    def is_connected(self, node_id: str) -> bool:
        return node_id in self._connected

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        node_id = member.node_id
        want = None
        if member.status.is_live:
            want = (member.address, member.pub_address, member.incarnation, member.tags)
        have = self._connected.get(node_id)
        if want == have:
            return
        if have is not None:
            del self._connected[node_id]
            self._ctx.emit(fx.Disconnect(node_id, have[0], have[1]))
        if want is not None:
            self._connected[node_id] = want
            self._ctx.emit(fx.Connect(node_id, want[0], want[1]))
