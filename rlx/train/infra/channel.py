"""Point-to-point messages between the trainer rank and the generation ranks (rlx/train/rollout/remote.py).

Built only on torch.distributed's point-to-point operations (`isend` / `irecv`) over process groups that
torchrun's ranks join (gloo for pickled objects; the weights over the world group, NCCL on GPUs): no sockets or
RPC of our own. Two kinds of message, in order per (sender, receiver):
  - an object: its pickled size (int64 [1]) then its bytes (uint8 [n]); only between our own ranks;
  - a weight publication: one flat float32 tensor of every parameter, laid out by a `layout` both sides know.
Sends never block (their tensors are kept alive until `flush`, which waits until the peer has taken them);
every receive waits with a deadline, so a rank whose peer died or hangs gets a `ChannelError` naming what it
waited for instead of hanging (gloo also fails a receive at once when the peer's connection closes), and a send
to a peer whose connection closed is a `ChannelError` too. A gloo point-to-point wait that times out closes the
connection: a timeout ends the exchange for good.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable, Iterator
from datetime import timedelta

import torch
import torch.distributed as torch_dist


class ChannelError(RuntimeError):
    """A peer rank did not deliver what was awaited in time, or its connection failed."""


def _reason(err: Exception) -> str:
    """gloo's first sentence without its source location: "[.../pair.cc:553] Connection closed by peer
    [127.0.0.1]:29348. This is typically caused by ..." -> "Connection closed by peer [127.0.0.1]:29348"."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", text).split(". ")[0]
    return "timed out" if "timed out" in text.lower() else text


def wait(work, timeout_s: float, what: str) -> None:
    """Wait for a send/receive `work` at most `timeout_s`; ChannelError names `what` on timeout or failure."""
    try:
        work.wait(timedelta(seconds=timeout_s))
    except RuntimeError as err:  # gloo: the timeout, or the peer's connection closed (the process died)
        raise ChannelError(f"no {what} within {timeout_s:.0f}s ({_reason(err)})") from None


def receive(tensor: torch.Tensor, peer: int, group, timeout_s: float, what: str) -> torch.Tensor:
    """`tensor` filled by `peer`'s next send over `group`, within `timeout_s` (else ChannelError)."""
    try:
        work = torch_dist.irecv(tensor, peer, group=group)
    except RuntimeError as err:  # the connection is already gone
        raise ChannelError(f"no {what} ({_reason(err)})") from None
    wait(work, timeout_s, what)
    return tensor


class Channel:
    """Messages to and from one peer rank: objects over `object_group` (gloo), weights over `weight_group`."""

    def __init__(self, peer: int, object_group, weight_group=None, device: torch.device | None = None):
        self.peer, self.object_group, self.weight_group = peer, object_group, weight_group
        self.device = device or torch.device("cpu")  # where weight tensors live for `weight_group`'s backend
        self._sending: list[tuple[object, torch.Tensor]] = []  # (work, tensor kept alive until flushed)

    def send(self, obj: object) -> None:
        data = torch.frombuffer(bytearray(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)), dtype=torch.uint8)
        what = f"{obj.get('kind', 'object')} message" if isinstance(obj, dict) else "object"
        self._post(torch.tensor([data.numel()], dtype=torch.int64), self.object_group, what)
        self._post(data, self.object_group, what)

    def send_weights(self, flat: torch.Tensor) -> None:
        """One publication: `flat` float32 [numel] (see `flatten`)."""
        self._post(flat.to(self.device), self.weight_group, "weights")

    def _post(self, tensor: torch.Tensor, group, what: str = "message") -> None:
        try:
            work = torch_dist.isend(tensor, self.peer, group=group)
        except RuntimeError as err:  # gloo: the peer's connection closed (the process died): fails at once
            raise ChannelError(f"cannot send the {what} ({_reason(err)})") from None
        self._sending.append((work, tensor))

    def flush(self, timeout_s: float, what: str = "delivery of the sent messages") -> None:
        """Wait until the peer has taken everything sent so far."""
        for work, _ in self._sending:
            wait(work, timeout_s, what)
        self._sending = []

    def recv(self, timeout_s: float, what: str) -> object:
        size = receive(torch.zeros(1, dtype=torch.int64), self.peer, self.object_group, timeout_s, what)
        data = receive(torch.empty(int(size.item()), dtype=torch.uint8), self.peer, self.object_group, timeout_s, what)
        return pickle.loads(data.numpy().tobytes())

    def recv_weights(self, numel: int, timeout_s: float, what: str) -> torch.Tensor:
        flat = torch.empty(numel, dtype=torch.float32, device=self.device)
        return receive(flat, self.peer, self.weight_group, timeout_s, what)


# ---------------------------------------------------------------- weights as one flat tensor
def layout_of(named: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor, in order: what `flatten` and `unflatten` agree on."""
    return [(name, tuple(t.shape)) for name, t in named]


def flatten(named: Iterable[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """Every tensor of `named` as float32, concatenated [numel] (the master weights are float32: exact)."""
    return torch.cat([t.detach().reshape(-1).to(torch.float32) for _, t in named])


def unflatten(flat: torch.Tensor, layout: list[tuple[str, tuple[int, ...]]]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, view of `flat` in its shape) per `layout` entry."""
    numels = [int(torch.Size(shape).numel()) for _, shape in layout]
    for (name, shape), part in zip(layout, flat.split(numels), strict=True):
        yield name, part.view(shape)
