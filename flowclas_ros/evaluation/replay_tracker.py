"""Bookkeeping of a live replay (ROS-free): match the node's answers to published frames by stamp.

The node copies each input's header into its ``~/result`` and ``~/score_map``
and always processes the newest frame, in order. So when the answer for a
frame arrives, every earlier frame still waiting for its answer was dropped
by the node (it will never be answered); likewise for score maps. That keeps
the pending set small: memory does not grow with the bag length.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowclas_ros.evaluation.frames import EvalFrame


@dataclass
class _Pending:
    seq: int
    frame: EvalFrame
    t_pub: float
    t_result: float | None = None
    image_score: float = 0.0
    threshold: float | None = None
    node_latency_ms: float | None = None
    score_map: np.ndarray | None = None


@dataclass
class AnsweredFrame:
    """A published frame with both its result and its score map.

    Attributes:
        frame: The published frame (image, mask, stamp).
        score_map: The node's (H, W) float32 score map.
        image_score: ``AnomalyResult.image_score``.
        threshold: ``AnomalyResult.threshold``.
        end_to_end_ms: Publish time to result receive time.
        node_latency_ms: ``AnomalyResult.model_ms`` (the node's share of the batch forward).
    """

    frame: EvalFrame
    score_map: np.ndarray
    image_score: float
    threshold: float | None
    end_to_end_ms: float
    node_latency_ms: float | None


class ReplayTracker:
    """Pairs published frames with the node's results and score maps by header stamp.

    Call :meth:`published`, :meth:`on_result` and :meth:`on_score_map` from one
    thread; the latter two return the frames completed by that message.
    """

    def __init__(self, max_pending: int = 256) -> None:
        """Track at most ``max_pending`` unanswered frames (older ones count as dropped)."""
        self.max_pending = max_pending
        self._pending: OrderedDict[int, _Pending] = OrderedDict()  # stamp -> frame, publish order
        self._seq = 0
        self.n_published = 0
        self.n_answered = 0
        self.n_dropped = 0
        self.n_score_map_missing = 0
        self.n_duplicate_stamps = 0
        self.n_unmatched = 0
        self.threshold: float | None = None
        self.last_answer_time: float | None = None

    @property
    def n_pending(self) -> int:
        """Published frames still waiting for their result or score map."""
        return len(self._pending)

    def published(self, frame: EvalFrame, t_pub: float) -> bool:
        """Record a frame published at ``t_pub`` (monotonic seconds).

        Returns:
            False if another pending frame has the same stamp: this one cannot be matched and
            is counted in ``n_duplicate_stamps`` (the caller should not publish it).
        """
        stamp = frame.stamp_ns
        if stamp is None:
            raise ValueError(f"frame {frame.name} has no stamp")
        if stamp in self._pending:
            self.n_duplicate_stamps += 1
            return False
        self.n_published += 1
        self._pending[stamp] = _Pending(self._seq, frame, t_pub)
        self._seq += 1
        while len(self._pending) > self.max_pending:
            _, old = self._pending.popitem(last=False)
            self._retire(old)
        return True

    def _retire(self, entry: _Pending) -> None:
        """Count a frame that will get no more answers."""
        if entry.t_result is None:
            self.n_dropped += 1
        else:
            self.n_score_map_missing += 1

    def _expire_before(self, seq: int, *, lacking: str) -> None:
        """Retire frames published before ``seq`` that lack ``lacking`` (it will never come).

        ``lacking="result"``: frames without a result were dropped by the node.
        ``lacking="score_map"``: answered frames without a score map lost it; frames with
        neither wait for the next result (the two topics are not ordered with each other).
        """
        for stamp in [s for s, e in self._pending.items() if e.seq < seq]:
            entry = self._pending[stamp]
            if lacking == "result":
                expired = entry.t_result is None
            else:
                expired = entry.t_result is not None and entry.score_map is None
            if expired:
                del self._pending[stamp]
                self._retire(entry)

    def _complete(self, stamp: int) -> list[AnsweredFrame]:
        entry = self._pending[stamp]
        if entry.t_result is None or entry.score_map is None:
            return []
        del self._pending[stamp]
        return [
            AnsweredFrame(
                entry.frame,
                entry.score_map,
                entry.image_score,
                entry.threshold,
                (entry.t_result - entry.t_pub) * 1000.0,
                entry.node_latency_ms,
            )
        ]

    def on_result(
        self,
        stamp_ns: int,
        t_recv: float,
        image_score: float,
        threshold: float | None = None,
        node_latency_ms: float | None = None,
    ) -> list[AnsweredFrame]:
        """Record an ``AnomalyResult`` received at ``t_recv``."""
        entry = self._pending.get(stamp_ns)
        if entry is None or entry.t_result is not None:
            self.n_unmatched += 1
            return []
        entry.t_result, entry.image_score = t_recv, float(image_score)
        entry.threshold, entry.node_latency_ms = threshold, node_latency_ms
        if threshold is not None:
            self.threshold = float(threshold)
        self.n_answered += 1
        self.last_answer_time = t_recv
        self._expire_before(entry.seq, lacking="result")
        return self._complete(stamp_ns)

    def on_score_map(self, stamp_ns: int, t_recv: float, score_map: np.ndarray) -> list[AnsweredFrame]:
        """Record a score map received at ``t_recv``."""
        entry = self._pending.get(stamp_ns)
        if entry is None or entry.score_map is not None:
            self.n_unmatched += 1
            return []
        entry.score_map = score_map
        self.last_answer_time = t_recv
        self._expire_before(entry.seq, lacking="score_map")
        return self._complete(stamp_ns)

    def finish(self) -> None:
        """Retire everything still pending (call once the replay has drained)."""
        while self._pending:
            _, entry = self._pending.popitem(last=False)
            self._retire(entry)

    def as_dict(self) -> dict[str, Any]:
        """Counts for metrics.json."""
        return {
            "n_published": self.n_published,
            "n_answered": self.n_answered,
            "n_dropped": self.n_dropped,
            "n_score_map_missing": self.n_score_map_missing,
            "n_duplicate_stamps": self.n_duplicate_stamps,
            "n_unmatched_messages": self.n_unmatched,
        }
