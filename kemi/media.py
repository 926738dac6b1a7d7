"""Media relay through rtpengine, when rtpengine_socket is set: the SDP of every call is
rewritten (offer, answer, delete: rtpengine_manage works out which from the message) so that
both phones send their RTP to rtpengine, which learns where each really is from the first
packet (symmetric RTP) and relays between them. Two phones behind different NATs, each writing
its private address in its SDP, hear each other.

The stages follow the reference script's NAT management: requests in their tm branch route,
replies in the transaction's reply route, the end of a failed call in its failure route, the
ACK (relayed statelessly) on its own. A message from behind NAT gets "SIP-source-address": its
SDP address is a private one, the address its signalling came from is the better guess until
its first RTP packet arrives.
"""

from __future__ import annotations

import KSR

from autoprov import config

_ON = bool(config.load().rtpengine_socket)
FLAGS = "replace-origin replace-session-connection ICE=remove"
NAT_FLAG = 5  # message flag: the request came from behind NAT (set by proxy._detect_nat)


def enabled() -> bool:
    return _ON


def before_relay(method: str) -> None:
    """Arm the routes that rewrite this request's SDP (its replies' come through
    proxy.on_reply); the ACK of a 2xx has no transaction of its own: it is handled at once."""
    if not _ON:
        return
    if method == "ACK":
        _manage(KSR.isflagset(NAT_FLAG))
        return
    KSR.tm.t_on_branch("ksr_branch_media")
    if method == "INVITE":
        KSR.tm.t_on_failure("ksr_failure_media")


def on_branch() -> None:
    """Each branch of a relayed request (forking: one offer per branch, rtpengine tells them
    apart)."""
    _manage(KSR.isflagset(NAT_FLAG))


def on_reply(behind_nat: bool) -> None:
    """A 1xx/2xx (a 3xx-6xx ends one branch only: the call may go on on another)."""
    if _ON:
        _manage(behind_nat)


def on_failure() -> None:
    """The call failed on every branch: the relay forgets it."""
    _manage(False)


def _manage(behind_nat: bool) -> None:
    KSR.rtpengine.rtpengine_manage(FLAGS + (" SIP-source-address" if behind_nat else ""))
