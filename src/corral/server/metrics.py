"""Server counters and their Prometheus text form (/metrics).

Counters live here rather than in the schedulers so they survive models being unloaded;
gauges (queue depth, running requests, loaded models) are read live from the manager.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.server.manager import ModelManager

# upper bounds of the time-to-first-token histogram buckets, in seconds
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Metrics:
    """Process-wide counters for one app."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0
    cancelled: int = 0
    ttft_sum: float = 0.0
    ttft_count: int = 0
    ttft_buckets: list[int] = field(default_factory=lambda: [0] * len(TTFT_BUCKETS))

    def observe_request(self, route: str, status: int) -> None:
        self.requests[(route, status)] += 1

    def observe_ttft(self, seconds: float) -> None:
        self.ttft_sum += seconds
        self.ttft_count += 1
        for i, bound in enumerate(TTFT_BUCKETS):
            if seconds <= bound:
                self.ttft_buckets[i] += 1

    def render(self, manager: ModelManager) -> str:
        """Prometheus exposition format, version 0.0.4."""
        out: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP corral_{name} {help_text}")
            out.append(f"# TYPE corral_{name} {kind}")
            out.extend(f"corral_{name}{labels} {_num(v)}" for labels, v in samples)

        metric(
            "requests_total", "counter", "HTTP requests answered, by route and status.",
            [(f'{{route="{r}",status="{s}"}}', n) for (r, s), n in sorted(self.requests.items())],
        )  # fmt: skip
        metric("prompt_tokens_total", "counter", "Prompt tokens processed (incl. cached).",
               [("", self.prompt_tokens)])  # fmt: skip
        metric("prompt_tokens_cached_total", "counter", "Prompt tokens reused from the cache.",
               [("", self.cached_prompt_tokens)])  # fmt: skip
        metric("generated_tokens_total", "counter", "Tokens generated.",
               [("", self.generated_tokens)])  # fmt: skip
        metric("requests_cancelled_total", "counter", "Generations stopped by their client.",
               [("", self.cancelled)])  # fmt: skip
        metric("queue_depth", "gauge", "Requests waiting for a model.",
               [("", manager.queue_depth())])  # fmt: skip
        metric("requests_running", "gauge", "Generations running now.", [("", manager.active())])
        metric("models_loaded", "gauge", "Models in memory.", [("", len(manager.loaded()))])
        buckets = [
            (f'{{le="{b:g}"}}', n) for b, n in zip(TTFT_BUCKETS, self.ttft_buckets, strict=True)
        ]
        buckets.append(('{le="+Inf"}', self.ttft_count))
        out.append("# HELP corral_time_to_first_token_seconds Submit to first token.")
        out.append("# TYPE corral_time_to_first_token_seconds histogram")
        out.extend(f"corral_time_to_first_token_seconds_bucket{lb} {n}" for lb, n in buckets)
        out.append(f"corral_time_to_first_token_seconds_sum {_num(self.ttft_sum)}")
        out.append(f"corral_time_to_first_token_seconds_count {self.ttft_count}")
        return "\n".join(out) + "\n"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
