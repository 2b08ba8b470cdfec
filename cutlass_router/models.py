"""Router shapes and expert choice of known MoE models: what `tune`, `info`, the examples and the benchmarks use."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Model:
    experts: int                 # N
    hidden: int                  # K
    top_k: int
    bias: bool                   # the gate has a GEMM bias
    route: dict = field(default_factory=dict)  # route()'s scoring arguments for this family
    fp32_logits: bool = False    # the reference gate computes fp32 logits

    @property
    def shape(self) -> tuple[int, int]:
        return self.experts, self.hidden


MODELS = {
    "gpt-oss-20b": Model(32, 2880, 4, True, dict(scoring="topk_softmax")),
    "gpt-oss-120b": Model(128, 2880, 4, True, dict(scoring="topk_softmax")),
    # DeepSeek-V3 / Kimi-K2-like: sigmoid scores, correction bias, 8 groups (keep 4), top-8, scaling 2.5
    "deepseek-v3": Model(256, 7168, 8, False, dict(scoring="sigmoid", renormalize=True, n_group=8, topk_group=4,
                                                   routed_scaling_factor=2.5, logit_precision="fp32"), True),
}


def get(name: str) -> Model:
    key = name.split("/")[-1].lower()  # accepts "openai/gpt-oss-20b"
    if key not in MODELS:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)} (or pass --experts N --hidden K)")
    return MODELS[key]


def shape(name: str) -> tuple[int, int]:
    return get(name).shape
