"""One UNet call for the denoising steps of several concurrent jobs.

A worker that runs several jobs at once (one thread each) shares one engine. Each job's
denoising loop calls the :class:`UNetBatcher` instead of the UNet: calls that arrive together are
concatenated along the batch, run as one UNet call, and split back. The GPU does a batch of 8 in
much less than four times a batch of 2, and one job's CPU or VAE work overlaps the others' UNet
steps.

Which calls wait for which: a job inside its denoising loop has *joined* (:meth:`UNetBatcher.joined`).
A call runs as soon as every joined job has a call waiting (a lone job never waits), or after
``max_wait_s`` if a joined job is slow to come back. Jobs may be at different steps (each sample
carries its own timestep); calls whose inputs cannot be concatenated (other window sizes, with and
without IP-Adapter) run in separate groups. One batch runs at a time.

Only the UNet call is shared: every job keeps its own noise, scheduler and conditioning, so a
job's pixels are those of running it alone (up to the GPU's floating-point rounding of a larger
batch).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

UNetCall = Callable[..., tuple[torch.Tensor, ...]]

MAX_WAIT_S = 0.05
"""How long a call waits for a joined job that has not called yet (a slow preview, say)."""


@dataclass
class _Call:
    sample: torch.Tensor
    timestep: torch.Tensor
    states: torch.Tensor
    added: dict[str, Any]
    output: torch.Tensor | None = None
    error: BaseException | None = None
    done: bool = field(default=False)

    def signature(self) -> tuple:
        """Calls with equal signatures can be concatenated along the batch."""
        image = self.added.get("image_embeds")
        tensors = [
            self.sample,
            self.states,
            self.added["text_embeds"],
            self.added["time_ids"],
            *(image or []),
        ]
        return (image is None, *((tuple(t.shape[1:]), t.dtype, t.device) for t in tensors))


class UNetBatcher:
    """Callable like the UNet (``sample, timestep, encoder_hidden_states=, added_cond_kwargs=``)."""

    def __init__(self, unet: UNetCall, *, max_wait_s: float = MAX_WAIT_S) -> None:
        self.unet = unet
        self.max_wait_s = max_wait_s
        self._cond = threading.Condition()
        self._joined = 0
        self._waiting: list[_Call] = []
        self._running = False
        self.largest_batch = 0  # the most jobs one UNet call has served (for logs and tests)

    @contextmanager
    def joined(self) -> Iterator[None]:
        """Wrap a job's denoising loop: while inside, other jobs' calls wait for this one's."""
        with self._cond:
            self._joined += 1
        try:
            yield
        finally:
            with self._cond:
                self._joined -= 1
                self._cond.notify_all()

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        *,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict[str, Any],
        return_dict: bool = False,
    ) -> tuple[torch.Tensor]:
        call = _Call(sample, timestep, encoder_hidden_states, added_cond_kwargs)
        deadline = time.monotonic() + self.max_wait_s
        with self._cond:
            self._waiting.append(call)
            self._cond.notify_all()
            while not call.done:
                now = time.monotonic()
                everyone = len(self._waiting) >= self._joined
                if not self._running and self._waiting and (everyone or now >= deadline):
                    batch, self._waiting, self._running = self._waiting, [], True
                    break
                self._cond.wait(None if self._running else max(0.0, deadline - now))
            else:
                return self._result(call)
        try:
            self._run(batch)
        finally:
            with self._cond:
                self._running = False
                self._cond.notify_all()
        return self._result(call)

    def call_as_batch(
        self,
        jobs: int,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        *,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict[str, Any],
    ) -> list[torch.Tensor]:
        """Make, now, the UNet call that ``jobs`` jobs calling with these inputs at once would
        share (a warm-up compiles and captures each batch size this way); their outputs."""
        group = [_Call(sample, timestep, encoder_hidden_states, added_cond_kwargs) for _ in range(jobs)]
        return self._forward(group)

    @staticmethod
    def _result(call: _Call) -> tuple[torch.Tensor]:
        if call.error is not None:
            raise call.error
        assert call.output is not None
        return (call.output,)

    def _run(self, batch: list[_Call]) -> None:
        groups: dict[tuple, list[_Call]] = {}
        for call in batch:
            groups.setdefault(call.signature(), []).append(call)
        self.largest_batch = max(self.largest_batch, *(len(g) for g in groups.values()))
        for group in groups.values():
            try:
                outputs = self._forward(group)
            except BaseException as error:  # every job of the group sees the failure
                for call in group:
                    call.error = error
            else:
                for call, output in zip(group, outputs, strict=True):
                    call.output = output
            finally:
                for call in group:
                    call.done = True

    def _forward(self, group: list[_Call]) -> list[torch.Tensor]:
        if len(group) == 1:  # as if there were no batcher
            call = group[0]
            output = self.unet(
                call.sample,
                call.timestep,
                encoder_hidden_states=call.states,
                added_cond_kwargs=call.added,
                return_dict=False,
            )[0]
            return [output]
        sizes = [call.sample.shape[0] for call in group]
        added: dict[str, Any] = {
            "text_embeds": torch.cat([c.added["text_embeds"] for c in group]),
            "time_ids": torch.cat([c.added["time_ids"] for c in group]),
        }
        if "image_embeds" in group[0].added:
            adapters = zip(*(c.added["image_embeds"] for c in group), strict=True)
            added["image_embeds"] = [torch.cat(list(per_adapter)) for per_adapter in adapters]
        timesteps = torch.cat([c.timestep.reshape(-1).expand(n) for c, n in zip(group, sizes, strict=True)])
        output = self.unet(
            torch.cat([c.sample for c in group]),
            timesteps,
            encoder_hidden_states=torch.cat([c.states for c in group]),
            added_cond_kwargs=added,
            return_dict=False,
        )[0]
        return list(output.split(sizes))
