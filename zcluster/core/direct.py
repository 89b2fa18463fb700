"""Direct messages at most once, and requests with their replies and timeouts."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.component import Command, Component, NodeContext, Receiver
from zcluster.protocol import messages as msg


class DirectMessages(Component):
    def __init__(self, ctx: NodeContext, leaving: Callable[[], bool]) -> None:
        self._ctx = ctx
        self._leaving = leaving
        #: pending requests of ours: id -> deadline
        self._requests: dict[int, float] = {}

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {msg.Send: self._rx_send, msg.Request: self._rx_request, msg.Reply: self._rx_reply}

    def commands(self) -> Mapping[type, Command]:
        return {
            ev.RequestStarted: self._on_request,
            ev.RequestSent: self._on_request_sent,
            ev.ReplyReady: self._on_reply_ready,
        }

    def send(self, event: ev.SendRequested) -> None:
        """An at-most-once send: to a live member, or nowhere."""
        ctx = self._ctx
        address = ctx.live_address(event.target)
        if address is None:
            ctx.counters["sends_dropped_not_member"] += 1
            return
        ctx.send(address, msg.Send(event.name), event.payload)

    def tick(self, now: float) -> None:
        for request_id, deadline in list(self._requests.items()):
            if now >= deadline:
                del self._requests[request_id]
                self._ctx.emit(
                    fx.CompleteRequest(request_id, False, error="timed out", timed_out=True)
                )

    def _on_request(self, event: ev.RequestStarted, now: float) -> None:
        ctx = self._ctx
        address = ctx.live_address(event.target)
        error = ""
        if address is None:
            error = f"{event.target!r} is not a live member"
        elif len(self._requests) >= ctx.config.pending_requests_max_count:
            error = "too many pending requests"
        if address is None or error:
            self._requests.pop(event.request_id, None)  # a RequestSent may have come first
            ctx.emit(fx.CompleteRequest(event.request_id, False, error=error))
            return
        self._requests[event.request_id] = now + event.timeout_s
        ctx.send(address, msg.Request(event.name, event.request_id, ctx.address), event.payload)

    def _on_request_sent(self, event: ev.RequestSent, now: float) -> None:
        self._requests[event.request_id] = now + event.timeout_s

    def _on_reply_ready(self, event: ev.ReplyReady, _: float) -> None:
        reply = msg.Reply(event.request_id, event.ok)
        self._ctx.send(event.reply_address, reply, event.payload)

    def _rx_send(self, env: msg.Envelope, payload: bytes, _: str | None, __: float) -> None:
        if self._leaving():
            self._ctx.counters["messages_refused_leaving"] += 1
            return
        send = env.message
        assert isinstance(send, msg.Send)
        self._ctx.emit(fx.Deliver(env.sender, send.name, payload))

    def _rx_request(self, env: msg.Envelope, payload: bytes, _: str | None, now: float) -> None:
        ctx = self._ctx
        request = env.message
        assert isinstance(request, msg.Request)
        address = ctx.answer_address(env, request.reply_address, now)
        if address is None:
            return  # a stranger past its rate: no work done that could not be answered
        if self._leaving():
            ctx.counters["messages_refused_leaving"] += 1
            text = f"node {ctx.node_id} is leaving the cluster".encode()
            ctx.send(address, msg.Reply(request.request_id, False), text)
            return
        ctx.emit(fx.Deliver(env.sender, request.name, payload, request.request_id, address))

    def _rx_reply(self, env: msg.Envelope, payload: bytes, _: str | None, __: float) -> None:
        ctx = self._ctx
        reply = env.message
        assert isinstance(reply, msg.Reply)
        if self._requests.pop(reply.request_id, None) is None:
            ctx.counters["replies_unmatched"] += 1
            return
        if reply.ok:
            ctx.emit(fx.CompleteRequest(reply.request_id, True, payload))
        else:
            error = bytes(payload).decode("utf-8", "replace")
            ctx.emit(fx.CompleteRequest(reply.request_id, False, error=error))
