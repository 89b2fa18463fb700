"""Who may join: one live process per node id.

A join (a SYNC asking for an answer, its sender speaking of itself) by a new
incarnation of a member we hold live at another address is one of two things:
a restart after a crash nobody has noticed yet, or a second process started
with a live member's id. Taken for a restart, as any newer incarnation is, it
would evict the live member everywhere. So the claim is checked first: the
holder is asked for its table (again at each join attempt: one question may
be lost). If the holder's incarnation answers within ``id_claim_timeout_s``,
the joiner is refused each time it asks (REFUSE, with the holder's address,
to a joiner that reads it; others are not answered); if not, the holder is
gone and the joiner is admitted. A holder that is LEAVING is neither: the
joiner is admitted once it has left (a restart overlapping the old leave). A joiner at the
holder's own address is a restart for certain (two processes cannot bind one
port) and is admitted at once. The joining side learns of a refusal here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from zcluster.core import effects as fx
from zcluster.core.component import Component, NodeContext, Receiver
from zcluster.protocol import messages as msg
from zcluster.protocol.capabilities import REFUSE
from zcluster.protocol.members import Member, MemberStatus

#: a check is forgotten this many timeouts after it began (the joiner gave up)
_CLAIM_KEPT_TIMEOUTS = 10


class _Claim:
    __slots__ = ("asked_at", "holder_incarnation", "joiner_incarnation", "live")

    def __init__(self, holder_incarnation: int, joiner_incarnation: int, asked_at: float) -> None:
        self.holder_incarnation = holder_incarnation
        self.joiner_incarnation = joiner_incarnation
        self.asked_at = asked_at
        #: whether the holder answered since: it is alive, the joiner is refused
        self.live = False


class Admission(Component):
    def __init__(self, ctx: NodeContext, ask: Callable[[Member], None]) -> None:
        self._ctx = ctx
        self._ask = ask
        #: node ids whose live holder is being asked, oldest first
        self._claims: dict[str, _Claim] = {}
        self._refused = False

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {msg.Refuse: self._rx_refuse}

    def admits(self, env: msg.Envelope, sync: msg.Sync, now: float) -> bool:
        """Whether to take this SYNC (merge its records, answer it); False while the
        joiner's claim to a live member's id is checked, and once the holder answered."""
        ctx = self._ctx
        claim = self._claims.get(env.sender)
        if claim is not None and env.incarnation == claim.holder_incarnation:
            claim.live = True  # the holder speaks: the claim is refused
            return True
        if not sync.want_reply:
            return True
        current = ctx.table.get(env.sender)
        if current is None or env.incarnation <= current.incarnation or not current.status.is_live:
            return True
        joiner = next((r for r in sync.records if r.node_id == env.sender), None)
        if joiner is None or joiner.incarnation != env.incarnation:
            return True
        if current is ctx.me:
            self._refuse(env, sync, current, now)  # our own id: we are the live holder
            return False
        if joiner.address == current.address:
            return True  # the holder's own port: it is gone, this is its restart
        if claim is None or claim.joiner_incarnation != env.incarnation:
            self._claims.pop(env.sender, None)
            self._claims[env.sender] = _Claim(current.incarnation, env.incarnation, now)
            ctx.counters["id_claims_checked"] += 1
            self._ask(current)
            return False
        if current.status is MemberStatus.LEAVING:
            return False  # a restart overlapping the old process's leave: admitted once LEFT
        if claim.live:
            self._refuse(env, sync, current, now)
            return False
        if now < claim.asked_at + ctx.config.id_claim_timeout_s:
            self._ask(current)  # again with each join attempt: one question may be lost
            return False
        del self._claims[env.sender]  # no answer: the holder is gone, this is its restart
        ctx.counters["id_claims_restarts"] += 1
        return True

    def _refuse(self, env: msg.Envelope, sync: msg.Sync, holder: Member, now: float) -> None:
        ctx = self._ctx
        ctx.counters["joins_refused_id_in_use"] += 1
        if REFUSE not in sync.capabilities:
            return
        address = ctx.answer_address(env, sync.reply_address, now)  # a stranger: rate-bound
        if address is not None:
            ctx.send(address, msg.Refuse(msg.REFUSED_ID_IN_USE, holder.address))

    def tick(self, now: float) -> None:
        if not self._claims:
            return
        kept_s = _CLAIM_KEPT_TIMEOUTS * self._ctx.config.id_claim_timeout_s
        for node_id, claim in list(self._claims.items()):
            if now - claim.asked_at > kept_s:
                del self._claims[node_id]

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        claim = self._claims.get(member.node_id)
        if claim is not None and member.incarnation != claim.holder_incarnation:
            del self._claims[member.node_id]  # admitted through another member meanwhile

    def _rx_refuse(self, env: msg.Envelope, _: bytes, __: str | None, ___: float) -> None:
        ctx = self._ctx
        refuse = env.message
        assert isinstance(refuse, msg.Refuse)
        if ctx.me.status is not MemberStatus.JOINING:
            return
        ctx.counters["join_refusals"] += 1
        if self._refused:
            return  # told once: the host reports it
        self._refused = True
        if refuse.code == msg.REFUSED_ID_IN_USE:
            reason = f"node id {ctx.node_id} is in use by a live member at {refuse.detail}"
        else:
            reason = f"refused by {env.sender} (code {refuse.code}): {refuse.detail}"
        ctx.emit(fx.JoinRefused(reason))
