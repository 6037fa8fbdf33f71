"""What each rank runs in tests/test_distributed.py (module-level functions, importable by spawned children)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import initrecipe


# ------------------------------------------------------------------------------------ models
def llama(tied: bool = False) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    # Sizes chosen so that FSDP2's and tensor parallelism's splits are uneven (vocab 101, 5 heads).
    config = LlamaConfig(hidden_size=40, intermediate_size=66, num_hidden_layers=2, num_attention_heads=5,
                         num_key_value_heads=5, vocab_size=101, tie_word_embeddings=tied)
    return LlamaForCausalLM(config)


def gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=36, n_head=3, vocab_size=97, n_positions=31))


class TitanBlock(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.attention_norm = nn.RMSNorm(dim)
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.ffn_norm = nn.RMSNorm(dim)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(h)
        h = h + self.wo(self.wqkv(x)[..., : x.shape[-1]])
        x = self.ffn_norm(h)
        return h + self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))


class TitanStyle(nn.Module):
    """A torchtitan-shaped Llama: parameters made empty in ``__init__`` and initialized by
    ``init_weights(buffer_device=...)`` (truncated normals with a depth-scaled std, a RoPE table
    computed into a buffer), the pattern torchtitan uses with a seed checkpoint."""

    def __init__(self, dim: int = 48, layers: int = 3, vocab: int = 103, hidden: int = 70) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(TitanBlock(dim, hidden) for _ in range(layers))
        self.norm = nn.RMSNorm(dim)
        self.output = nn.Linear(dim, vocab, bias=False)
        self.register_buffer("freqs", torch.empty(64, dim // 2), persistent=False)

    def init_weights(self, buffer_device: torch.device | None = None) -> None:
        with torch.device(buffer_device) if buffer_device is not None else torch.device(self.freqs.device):
            exponents = torch.arange(0, self.freqs.shape[1], dtype=torch.float32) / self.freqs.shape[1]
            self.freqs = torch.outer(torch.arange(64, dtype=torch.float32), 1.0 / (10000.0 ** exponents))
        nn.init.normal_(self.tok_embeddings.weight)
        for depth, block in enumerate(self.layers):
            std = 0.02 / math.sqrt(2 * (depth + 1))
            for linear in (block.wqkv, block.w1):
                nn.init.trunc_normal_(linear.weight, mean=0.0, std=0.02)
            for linear in (block.wo, block.w2, block.w3):
                nn.init.trunc_normal_(linear.weight, mean=0.0, std=std)
            block.attention_norm.reset_parameters()
            block.ffn_norm.reset_parameters()
        self.norm.reset_parameters()
        cutoff = 3 / math.sqrt(self.output.in_features)
        nn.init.trunc_normal_(self.output.weight, mean=0.0, std=self.output.in_features ** -0.5, a=-cutoff, b=cutoff)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(tokens)
        for block in self.layers:
            h = block(h)
        return self.output(self.norm(h))


def titan_style() -> nn.Module:
    model = TitanStyle()
    model.init_weights()
    return model


BUILDERS = {"llama": llama, "llama_tied": lambda: llama(tied=True), "gpt2": gpt2, "titan": titan_style}


def build_meta(kind: str) -> nn.Module:
    with torch.device("meta"):
        return TitanStyle() if kind == "titan" else BUILDERS[kind]()


# ------------------------------------------------------------------------------------ layouts
def _blocks(model: nn.Module) -> list[nn.Module]:
    if hasattr(model, "model"):
        return list(model.model.layers)
    if hasattr(model, "transformer"):
        return list(model.transformer.h)
    return list(model.layers)


def fsdp(model: nn.Module, mesh: Any) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for block in _blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def tensor_parallel(model: nn.Module, mesh: Any) -> nn.Module:
    """Column-wise then row-wise splits of every block's MLP (Shard(0) then Shard(1) weights)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    for block in _blocks(model):
        if hasattr(block, "mlp"):
            plan = {"mlp.gate_proj": ColwiseParallel(), "mlp.up_proj": ColwiseParallel(), "mlp.down_proj": RowwiseParallel()}
        else:
            plan = {"w1": ColwiseParallel(), "w3": ColwiseParallel(), "w2": RowwiseParallel()}
        parallelize_module(block, mesh, plan)
    return model


def gathered(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, whole (DTensors gathered: a collective on every rank)."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, tensor in list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False)):
        out[name] = (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().clone()
    return out


def compare(model: nn.Module, recipe: initrecipe.Recipe) -> list[str]:
    """Names whose gathered values differ from the single-process replay."""
    reference = initrecipe.replay(recipe)
    mine = gathered(model)
    return sorted(n for n in reference if not torch.equal(mine[n], reference[n]))


def train_step(model: nn.Module, kind: str) -> float:
    """One forward, backward and AdamW step; returns the loss (finite) after checking a parameter moved."""
    torch.manual_seed(1234)  # the same batch on every rank
    vocab = {"llama": 101, "llama_tied": 101, "gpt2": 97, "titan": 103}[kind]
    tokens = torch.randint(0, vocab, (2, 7))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = next(model.parameters())
    before = first.detach().clone()
    if kind == "titan":
        logits = model(tokens)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
    else:
        loss = model(tokens, labels=tokens).loss
    loss.backward()
    optimizer.step()
    value = float(loss.detach())
    assert math.isfinite(value), "the loss is not finite"
    assert not torch.equal(first.detach(), before), "the optimizer step changed nothing"
    return value


# ------------------------------------------------------------------------------------ scenarios
def fsdp_world(rank: int, world: int, recipes: dict[str, str]) -> dict[str, Any]:
    """FSDP2 over every rank, for each recorded model: gathered weights equal replay; ties kept;
    a training step runs."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    report: dict[str, Any] = {}
    for label, path in sorted(recipes.items()):
        kind = label.rsplit("-", 1)[0]
        recipe = initrecipe.load(path)
        model = fsdp(build_meta(kind), mesh)
        initrecipe.materialize(model, recipe)
        entry: dict[str, Any] = {"differ": compare(model, recipe)}
        if kind == "gpt2":
            entry["tied"] = model.lm_head.weight is model.transformer.wte.weight
        entry["loss"] = train_step(model, kind)
        report[label] = entry
    return report


def two_d_world(rank: int, world: int, recipes: dict[str, str]) -> dict[str, Any]:
    """A 2 x 2 mesh: tensor parallelism on `tp`, FSDP2 on `dp`, against FSDP2 alone over all 4."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    flat = init_device_mesh("cpu", (world,))
    report: dict[str, Any] = {}
    for label, path in sorted(recipes.items()):
        kind = label.rsplit("-", 1)[0]
        recipe = initrecipe.load(path)
        model = fsdp(tensor_parallel(build_meta(kind), mesh["tp"]), mesh["dp"])
        initrecipe.materialize(model, recipe)
        placements = sorted({str(t.placements) for t in model.parameters() if isinstance(t, DTensor)})
        two_d = gathered(model)
        other = fsdp(build_meta(kind), flat)
        initrecipe.materialize(other, recipe)
        one_d = gathered(other)
        report[label] = {
            "differ": compare(model, recipe),
            "layouts_differ": sorted(n for n in two_d if not torch.equal(two_d[n], one_d[n])),
            "placements": placements,
            "loss": train_step(model, kind),
        }
    return report


def distribute_world(rank: int, world: int, recipes: dict[str, str]) -> dict[str, Any]:
    """`initrecipe.distribute` with Shard(0), Shard(1) and Replicate, uneven sizes included."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard

    mesh = init_device_mesh("cpu", (world,))
    report: dict[str, Any] = {}
    for label, path in sorted(recipes.items()):
        recipe = initrecipe.load(path)
        reference = initrecipe.replay(recipe)

        def placements(name: str, shape: tuple[int, ...]) -> list[Any] | None:
            if len(shape) == 2:
                return [Shard(1)] if "proj" in name else [Shard(0)]
            return [Replicate()] if "norm" in name else None

        tensors = initrecipe.distribute(recipe, mesh, placements)
        differ, kinds = [], set()
        for name, value in tensors.items():
            assert isinstance(value, DTensor), name
            kinds.add(str(value.placements))
            if not torch.equal(value.full_tensor(), reference[name]):
                differ.append(name)
            if isinstance(reference[name], nn.Parameter):
                assert isinstance(value, nn.Parameter) and value.requires_grad == reference[name].requires_grad, name
        report[label] = {"differ": differ, "placements": sorted(kinds)}
    return report


def errors_world(rank: int, world: int, recipes: dict[str, str]) -> list[str]:
    """The errors users get for a module that does not fit the recipe."""
    recipe = initrecipe.load(recipes["llama-torch"])
    messages = []
    real = BUILDERS["llama"]()  # not on meta
    for module in (real, build_meta("gpt2")):
        try:
            initrecipe.materialize(module, recipe)
        except initrecipe.ReplayError as exc:
            messages.append(str(exc))
    return messages
