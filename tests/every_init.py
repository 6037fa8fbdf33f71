"""A module that calls every ``torch.nn.init`` function, and what ``describe`` calls each tensor.

``tests/test_show.py`` records it under the installed torch; ``tools/make_nn_init_fixtures.py``
records it under each supported torch into ``tests/nn_init/`` (each release's op sequences, checked
in), so every release's patterns are tested under any torch.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class EveryInit(nn.Module):
    """Every torch.nn.init function, and the patterns models build from them."""

    def __init__(self) -> None:
        super().__init__()
        inits = {
            "uniform": lambda t: nn.init.uniform_(t, -0.1, 0.3),
            "normal": lambda t: nn.init.normal_(t, 0.0, 0.02),
            "const": lambda t: nn.init.constant_(t, 0.5),
            "ones": nn.init.ones_,
            "zeros": nn.init.zeros_,
            "eye": nn.init.eye_,
            "xavier_u": nn.init.xavier_uniform_,
            "xavier_n": nn.init.xavier_normal_,
            "kaiming_u": nn.init.kaiming_uniform_,
            "kaiming_n": lambda t: nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"),
            "kaiming_u5": lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5)),
            "orth": lambda t: nn.init.orthogonal_(t, gain=2.0),
            "sparse": lambda t: nn.init.sparse_(t, 0.5),
        }
        for name, fn in inits.items():
            p = nn.Parameter(torch.empty(6, 5))
            with torch.no_grad():
                fn(p)
            self.register_parameter(name, p)
        # trunc_normal_ where draws are rejected (torch's normal-rejection and uniform-acceptance loops)
        self.trunc = nn.Parameter(torch.empty(200, 20))
        nn.init.trunc_normal_(self.trunc, std=0.02, a=-0.04, b=0.04)
        self.trunc_tail = nn.Parameter(torch.empty(20, 20))
        nn.init.trunc_normal_(self.trunc_tail, mean=0.0, std=1.0, a=0.5, b=0.9)
        self.emb = nn.Embedding(6, 4, padding_idx=1)
        self.conv = nn.Conv1d(2, 2, 3)
        nn.init.dirac_(self.conv.weight)
        self.conv2 = nn.Conv2d(2, 4, 3, groups=2)
        nn.init.dirac_(self.conv2.weight, groups=2)
        self.ones_written = nn.Parameter(torch.zeros(2, 2, 3))  # not a dirac_: ones off the diagonal
        with torch.no_grad():
            self.ones_written[0, 1, 1] = 1
            self.ones_written[1, 0, 1] = 1
        self.half = nn.Linear(4, 4).to(torch.bfloat16)
        self.scaled = nn.Parameter(torch.empty(3, 8))
        self.scaled.data.normal_().mul_(0.5)
        fused = torch.empty(6, 4).normal_()
        self.q = nn.Parameter(fused[:2])
        self.register_buffer("positions", torch.arange(5).unsqueeze(0))


EXPECTED_INITS = {
    "uniform": "uniform_(a=-0.1, b=0.3)",
    "normal": "normal_(mean=0.0, std=0.02)",
    "const": "full(0.5)",
    "ones": "ones",
    "zeros": "zeros",
    "eye": "eye_()",
    "xavier_u": "xavier_uniform_()",
    "xavier_n": "xavier_normal_()",
    "kaiming_u": "kaiming_uniform_()",
    "kaiming_n": "kaiming_normal_(mode='fan_out')",
    "kaiming_u5": "kaiming_uniform_(a=sqrt(5))",
    "orth": "orthogonal_(gain=2.0)",
    "sparse": "sparse_(sparsity=0.5, std=0.01)",
    "trunc": "trunc_normal_(mean=0.0, std=0.02, a=-0.04, b=0.04)",
    "trunc_tail": "trunc_normal_(mean=0.0, std=1.0, a=0.5, b=0.9)",
    "emb.weight": "normal_(mean=0.0, std=1.0); [1] zeros",
    "conv.weight": "dirac_()",
    "conv2.weight": "dirac_(groups=2)",
    "conv2.bias": "uniform_(a=-1/sqrt(9), b=1/sqrt(9))",
    "ones_written": "zeros; [0, 1, 1] ones; [1, 0, 1] ones",
    "conv.bias": "uniform_(a=-1/sqrt(6), b=1/sqrt(6))",
    "half.weight": "kaiming_uniform_(a=sqrt(5)), as bfloat16",
    "half.bias": "uniform_(a=-1/sqrt(4), b=1/sqrt(4)), as bfloat16",
    "scaled": "normal_(mean=0.0, std=1.0); mul_(0.5)",
    "q": "normal_(mean=0.0, std=1.0) (view [0:2] of a (6, 4) tensor)",
    "positions": "arange(5)",
}
