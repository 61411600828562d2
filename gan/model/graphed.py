"""The training iteration captured as one CUDA graph and replayed (``cuda_graphs``: auto, on or off).

A pack's iteration launches hundreds of small kernels (each member's random draws, each activation group, the
stacked Adam's passes); on a GPU their launches, not their arithmetic, set the pace. A CUDA graph records those
kernels once and replays them with one launch, as torch's whole-network capture recipe does (warm-up iterations on
a side stream, then one capture; forward, backward and both optimizers' steps inside it).

What a capture needs, and how the iteration provides it:

- **Random draws**: every member's ``torch.Generator`` is registered with the graph, so replay i draws exactly
  the numbers eager iteration i would (each generator's offset advances at every replay).
- **Static inputs**: the real batch is copied into the graph's own tensor before each replay; the iteration
  number (for the divergence flags) and the instance-noise scales are device tensors filled before it.
- **No host syncs**: constants, index tensors and optimizer hyperparameters are built once, outside the capture.
- **State that Python decides** (which members are alive, which members still add instance noise, whether the
  weight average has started): part of the graph's key; when it changes the graph is dropped and, after a
  warm-up iteration, captured again (a divergence or the end of an instance-noise decay: once or twice a run).

Lightning's bookkeeping (``global_step``, which counts optimizer steps) runs in Python around each replay, as the
eager step's optimizer wrappers do it. A batch of another shape runs eagerly.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

CUDA_GRAPH_CHOICES = ("auto", "on", "off")
# Lightning's mixed precisions scale the loss and autocast around its own backward and step, which a captured
# iteration leaves out: with them the iteration stays eager.
MIXED_PRECISIONS = ("16-mixed", "bf16-mixed", "16", "bf16")
WARMUP_ITERATIONS = 2  # eager iterations on the side stream before each capture (torch's recipe uses a few)


def cuda_graph_setting(value: object) -> str:
    """The setting as one of ``CUDA_GRAPH_CHOICES``: YAML reads an unquoted ``on``/``off`` as a boolean (and a
    string field keeps it as "True"/"False"), so those mean on and off; anything else is returned as given."""
    text = str(value)
    return {"true": "on", "false": "off"}.get(text.lower(), text)


def graphs_wanted(setting: str, device: torch.device, precision: object = "32-true") -> bool:
    """Whether ``cuda_graphs=setting`` captures the iteration on ``device``: auto and on capture on CUDA, never on
    the CPU (where eager and compiled steps ran at the same speed: the step is matmul-bound there), never under a
    mixed ``precision`` (``MIXED_PRECISIONS``)."""
    setting = cuda_graph_setting(setting)
    if setting not in CUDA_GRAPH_CHOICES:
        raise ValueError(f"cuda_graphs={setting!r}: valid choices are {', '.join(CUDA_GRAPH_CHOICES)}")
    return setting != "off" and device.type == "cuda" and str(precision) not in MIXED_PRECISIONS


class StepGraph:
    """One captured training iteration and what it needs to replay: the static batch, the outputs, the key it was
    captured under. ``body(batch, graphed)`` runs one iteration (``graphed``: inside a capture, so no Lightning
    wrappers) and returns its output tensors; ``bookkeeping()`` does for a replay what the Lightning wrappers do;
    ``release_grads()`` lets go of the gradients a capture allocated in the graph's pool."""

    def __init__(
        self,
        device: torch.device,
        generators: Sequence[torch.Generator],
        body: Callable[[torch.Tensor, bool], dict[str, Any]],
        bookkeeping: Callable[[], None],
        release_grads: Callable[[], None],
    ) -> None:
        self.device = device
        self.generators = list(generators)
        self.body, self.bookkeeping, self.release_grads = body, bookkeeping, release_grads
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key: Hashable | None = None
        self.static_batch: torch.Tensor | None = None
        self.outputs: dict[str, Any] | None = None
        self.warm = 0
        self.captures = 0  # how many times the iteration was captured (1 in a run where nothing changes)
        self.replays = 0  # iterations that ran as a replay
        self.eager = 0  # iterations that ran eagerly (warm-ups, other shapes)

    def release(self) -> None:
        """Drop the graph (its memory pool goes when nothing points into it: the gradients are let go first)."""
        if self.graph is not None:
            self.release_grads()
            self.outputs = None
            self.static_batch = None
            self.graph.reset()
            self.graph = None
        self.warm = 0

    def run(self, key: Hashable, batch: torch.Tensor) -> dict[str, Any]:
        """One iteration: replayed when a graph for ``key`` and this batch shape exists, else eager (a warm-up on
        the side stream) or, once warm, captured and replayed."""
        if key != self.key:
            self.release()
            self.key = key
        if self.graph is not None:
            if batch.shape != self.static_batch.shape or batch.dtype != self.static_batch.dtype:
                self.eager += 1
                return self.body(batch, False)
            self.static_batch.copy_(batch)
            self._replay()
            self.bookkeeping()
            return self.outputs
        if self.warm < WARMUP_ITERATIONS:
            self.warm += 1
            self.eager += 1
            return self._warm_up(batch)
        self.static_batch = batch.clone()
        self._capture()
        self.captures += 1
        self._replay()  # a capture records the iteration without running it
        self.bookkeeping()
        return self.outputs

    def _warm_up(self, batch: torch.Tensor) -> dict[str, Any]:
        """An eager iteration on the side stream the capture will use (its cuBLAS handle and workspace, the
        optimizers' state and every cached constant exist before the capture)."""
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            out = self.body(batch, False)
        current.wait_stream(self.stream)
        return out

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        for generator in (g for g in self.generators if g.device.type == "cuda"):
            graph.register_generator_state(generator)
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                self.outputs = self.body(self.static_batch, True)
        except RuntimeError as exc:
            raise RuntimeError(
                f"capturing the training iteration as a CUDA graph failed ({str(exc).splitlines()[0]}); "
                f"cuda_graphs=off trains eagerly (the same numbers, slower)"
            ) from exc
        self.graph = graph

    def _replay(self) -> None:
        self.graph.replay()
        self.replays += 1

    def summary(self) -> dict[str, int]:
        return {"captures": self.captures, "replays": self.replays, "eager": self.eager}
