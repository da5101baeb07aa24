"""Micro-batched forward passes: every model forward of a training step goes through here.

Owns the split of a packed batch into micro-batches (`train.micro_batch_tokens`: at most that many padded
prompt+response tokens per forward, longest first, so short sequences share a micro-batch; else
`train.micro_batch_size` sequences) and the no-grad passes that freeze a batch (pi_old and pi_ref
log-probs, critic values), each computed per micro-batch and written back into [B, T] tensors. Forwards
run under `model.dtype` autocast over fp32 weights; the results are fp32 (or the model's wider dtype).
With `train.share_prefix` a micro-batch is a set of packed sequences, each a token trie of rows sharing a
prefix (rlx/models/prefix.py: a shared prefix computed once, the same numbers and gradients), and the token
cap counts what is computed: sequences x the widest trie.

Under torchrun every rank runs the same number of micro-batches (`synced_plan`): a sharded (FSDP2) module's
forward and backward are collectives, and DDP averages the gradients once per optimizer step. A rank with
fewer micro-batches than the busiest one splits its largest ones and, if still short, runs dummy
micro-batches (`DUMMY`, one token; their results are discarded, their losses are zero).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from rlx.models.full_params import unwrap
from rlx.models.logprobs import (
    PackedBatch,
    pack,
    plan_micro_batches,
    response_logprobs,
    select_rows,
    share_prefixes,
)
from rlx.models.precision import autocast_context
from rlx.models.prefix import share_segments
from rlx.train.infra import distributed as dist
from rlx.train.infra import parallel, preemption

DUMMY = pack([[0]], [[0]], 0)  # the one-token batch a rank without real rows forwards to join a collective
# sharing must cut the computed (padded) tokens to at most this share of the unshared plan's: below that its
# overheads (the tries, the block mask, dense attention over packed sequences) cost more than it saves (PPO
# with one sample per prompt: 1% fewer tokens, 0.83x the speed; make bench-prefix)
SHARE_GAIN = 0.9


def even_out(plan: list[list[int]], count: int) -> list[list[int]]:
    """`plan` grown to `count` micro-batches: the largest split in halves while one has two rows or more, then
    empty micro-batches ([]: a dummy forward) appended. Row order inside the split ones is kept."""
    plan = [list(rows) for rows in plan]
    while len(plan) < count and any(len(rows) > 1 for rows in plan):
        i = max(range(len(plan)), key=lambda j: len(plan[j]))
        rows = plan.pop(i)
        plan[i:i] = [rows[: len(rows) // 2], rows[len(rows) // 2 :]]
    return plan + [[] for _ in range(count - len(plan))]


class MicroBatch(list):
    """The row indices of one micro-batch (a list, in increasing order) and `segments`: its rows grouped into the
    packed sequences that compute their shared prefixes once, as positions in this list (None: unshared), and
    `unique_tokens`: their tries' sizes, summed (each shared token once)."""

    def __init__(self, rows, segments: list[list[int]], unique_tokens: int, computed_tokens: int):
        super().__init__(rows)
        self.segments = segments
        self.unique_tokens = unique_tokens
        self.computed_tokens = computed_tokens  # packed sequences x the widest trie: padding included


class Forwards:
    def __init__(self, micro_batch_tokens: int | None, micro_batch_size: int, dtype: str, device: torch.device,
                 logprob_chunk: int, share_prefix: bool = False, share_width: int | None = None,
                 pair_cost: float = 0.0):
        self.micro_batch_tokens = micro_batch_tokens
        self.micro_batch_size = None if micro_batch_tokens is not None else micro_batch_size
        self.dtype = dtype
        self.device = device
        self.logprob_chunk = logprob_chunk
        self.share_prefix = share_prefix
        # the widest packed sequence: its dense attention costs width^2 however few of those pairs are attended
        self.share_width = share_width if share_width is not None else micro_batch_tokens
        self.pair_cost = pair_cost  # `attention_pair_cost` of the policy: when packing rows together pays

    def autocast(self):
        """Wraps every forward pass (never a backward or the loss): `model.dtype` compute, fp32 weights."""
        return autocast_context(self.dtype, self.device)

    def plan(self, packed: PackedBatch, rows: Sequence[int] | None = None) -> list[list[int]]:
        """Micro-batches of `rows` (default: every row) as lists of row indices of `packed`, in row order."""
        rows = list(range(packed.response_mask.shape[0])) if rows is None else list(rows)
        lengths = packed.attention_mask[rows].sum(-1).tolist()  # prompt + response tokens of each row
        plain = [[rows[i] for i in part] for part in plan_micro_batches(lengths, self.micro_batch_tokens,
                                                                        self.micro_batch_size)]
        if not self.share_prefix:
            return plain
        shared = self.shared_plan(packed, rows)
        unshared_cost = sum(len(part) * int(packed.attention_mask[part].sum(-1).max()) for part in plain)
        return shared if sum(m.computed_tokens for m in shared) <= SHARE_GAIN * unshared_cost else plain

    def shared_plan(self, packed: PackedBatch, rows: list[int]) -> list[MicroBatch]:
        """Micro-batches of whole packed sequences (`share_segments`: rows sharing a prefix where that is cheaper,
        each trie at most `share_width` tokens), longest first, at most `micro_batch_tokens` computed tokens each
        (sequences x the widest trie; a lone wider sequence alone) or `micro_batch_size` packed sequences."""
        lengths = packed.attention_mask[rows].sum(-1).tolist()  # [b] real tokens of each row
        tokens = [ids[:n] for ids, n in zip(packed.input_ids[rows].tolist(), lengths)]
        segments = share_segments(tokens, self.share_width, self.pair_cost)
        plan = []
        for part in plan_micro_batches([size for _, size in segments], self.micro_batch_tokens,
                                       self.micro_batch_size):
            members = sorted(i for k in part for i in segments[k][0])  # positions in `rows`
            local = {i: j for j, i in enumerate(members)}
            sizes = [segments[k][1] for k in part]
            plan.append(MicroBatch([rows[i] for i in members], [[local[i] for i in segments[k][0]] for k in part],
                                   sum(sizes), len(sizes) * max(sizes)))
        return plan

    def select(self, packed: PackedBatch, rows: Sequence[int]) -> PackedBatch:
        """The sub-batch of one micro-batch's rows, laid out to share prefixes when the plan packed them so."""
        return self.lay_out(select_rows(packed, rows), rows)

    @staticmethod
    def lay_out(sub: PackedBatch, rows: Sequence[int]) -> PackedBatch:
        """`sub`, the rows of the micro-batch `rows` in its order (`select_rows`), laid out to share prefixes
        when the plan packed them so (a `MicroBatch`'s segments); else `sub` itself."""
        segments = getattr(rows, "segments", None)
        return sub if segments is None else share_prefixes(sub, segments)

    def synced_plan(self, packed: PackedBatch | None, rows: Sequence[int] | None = None) -> list[list[int]]:
        """`plan`, evened out to the largest micro-batch count over the ranks (one all-reduce under torchrun;
        one process: `plan` itself). `packed=None`: a rank with no rows, which only joins (dummy forwards)."""
        plan = [] if packed is None else self.plan(packed, rows)
        if dist.world_size() == 1:
            return plan
        return even_out(plan, dist.max_over_ranks(len(plan)))

    def forward_tokens(self, packed: PackedBatch) -> int:
        """Real tokens one forward pass over every row of `packed` computes, padding aside: each row's prompt +
        response, or with shared prefixes each packed sequence's trie (a shared token once)."""
        return sum(rows.unique_tokens if isinstance(rows, MicroBatch) else int(packed.attention_mask[rows].sum())
                   for rows in self.plan(packed))

    @staticmethod
    def computed_tokens(sub: PackedBatch) -> int:
        """Token slots one forward pass over `sub` computes, padding included: rows x width, or its shared layout's."""
        return sub.layout.computed_tokens if sub.layout is not None else int(sub.input_ids.numel())

    def logprobs(self, model, packed: PackedBatch, with_entropy: bool = False):
        """`response_logprobs` of one (micro-)batch under autocast -> ([B, T], [B, T] | None). `model` may be
        a DDP wrapper or an FSDP2-sharded module: the lean path then runs as the wrapped module's forward
        (`parallel.forward_through`), so the wrapper's gradient sync and all-gathers take part."""
        inner = unwrap(model)
        with self.autocast():
            return parallel.forward_through(
                model, lambda: response_logprobs(inner, packed, with_entropy, chunk=self.logprob_chunk))

    def values(self, critic, packed: PackedBatch) -> torch.Tensor:
        with self.autocast():
            return critic(packed)  # [B, T]

    @torch.no_grad()
    def frozen_logprobs(self, model, packed: PackedBatch) -> torch.Tensor:
        """log pi(y_t | ...) of every row, no grad, micro-batched -> [B, T]."""
        return self.over_micro_batches(lambda sub: self.logprobs(model, sub)[0], packed)

    @torch.no_grad()
    def frozen_entropy(self, model, packed: PackedBatch) -> torch.Tensor:
        """Per-token policy entropy H(pi(. | prefix)) of every row, no grad, micro-batched -> [B, T]."""
        return self.over_micro_batches(lambda sub: self.logprobs(model, sub, with_entropy=True)[1], packed)

    @torch.no_grad()
    def frozen_values(self, critic, packed: PackedBatch) -> torch.Tensor:
        """Critic values of every row, no grad, micro-batched -> [B, T]."""
        return self.over_micro_batches(lambda sub: self.values(critic, sub), packed)

    def over_micro_batches(self, fn: Callable[[PackedBatch], torch.Tensor], packed: PackedBatch | None,
                           ) -> torch.Tensor | None:
        """fn on each micro-batch (rows selected, padding trimmed) -> its [b, T'] results written into [B, T].
        Under torchrun the ranks run equally many (`synced_plan`); packed=None only joins them (-> None)."""
        out = None
        for rows in self.synced_plan(packed):
            preemption.abandon_point("frozen")  # in a step's update: a signal abandons the step here (every rank)
            if not rows:
                fn(DUMMY)  # joins the other ranks' forward; the result is discarded
                continue
            part = fn(self.select(packed, rows))  # [b, T']
            if out is None:
                out = torch.zeros(packed.response_mask.shape, dtype=part.dtype)  # [B, T]
            out[rows, : part.shape[1]] = part
        return out
