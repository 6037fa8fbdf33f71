"""Init flows people run for large models, as zero-argument constructors (``tests/test_flows.py``).

Module-level so that the command line (``initrecipe record flow_models:NAME``) can import them.
Each returns an ``nn.Module``; the ones named ``*_on`` take the device their tensors are built on,
so the same flow can be run eagerly on the CPU and recorded with an accelerator's label.
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """A small model with the usual kinds of tensors: linear, embedding, norm, a computed buffer."""

    def __init__(self, dim: int = 8, vocab: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.register_buffer("scale", torch.arange(dim, dtype=torch.float32).div(dim), persistent=False)

    def init_weights(self) -> None:
        """What a meta flow calls after ``to_empty``: every tensor written, as torchtitan does."""
        for module in (self.embed, self.proj, self.norm, self.head):
            module.reset_parameters()
        self.scale = torch.arange(self.scale.numel(), dtype=torch.float32).div(self.scale.numel())


def meta_then_assign() -> nn.Module:
    """The issue's silent bug: a random fill of a meta tensor draws nothing, in eager as recorded."""
    with torch.device("meta"):
        m = nn.Linear(8, 8)  # kaiming_uniform_ and uniform_ on meta tensors: no draws
    m.weight = nn.Parameter(torch.empty_like(m.weight, device="cpu"))
    nn.init.normal_(m.weight)  # the stream's first values
    m.bias = nn.Parameter(torch.randn(8))
    return m


def meta_to_empty() -> nn.Module:
    """``with torch.device("meta")``, ``to_empty`` and ``init_weights`` (torchtitan, FSDP2)."""
    with torch.device("meta"):
        m = Block()
    m.to_empty(device="cpu")
    m.init_weights()
    return m


def meta_to_empty_reset_parameters() -> nn.Module:
    """The common meta flow: ``reset_parameters`` per module, which misses computed buffers."""
    with torch.device("meta"):
        m = Block()
    m.to_empty(device="cpu")
    for module in m.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return m  # `scale` stays uninitialized, in eager as in the recipe


def skip_init() -> nn.Module:
    """``torch.nn.utils.skip_init``: built on meta, ``to_empty``; only the weight is initialized."""
    m = torch.nn.utils.skip_init(nn.Linear, 8, 4)
    nn.init.orthogonal_(m.weight)
    return m  # `bias` is uninitialized memory


def default_device_meta() -> nn.Module:
    """``torch.set_default_device("meta")`` set and unset inside the constructor."""
    torch.set_default_device("meta")
    try:
        m = Block()
    finally:
        torch.set_default_device(None)
    m.to_empty(device="cpu")
    m.init_weights()
    return m


def default_device_meta_left() -> nn.Module:
    """``torch.set_default_device("meta")`` left set: the model stays on the meta device."""
    torch.set_default_device("meta")
    return nn.Linear(4, 4)


def default_dtype_bf16() -> nn.Module:
    """``torch.set_default_dtype`` set and restored inside the constructor (torchtitan's context)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        low = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8))
        low.register_buffer("steps", torch.arange(0.0, 1.0, 0.25))
    finally:
        torch.set_default_dtype(previous)
    return nn.Sequential(low, nn.Linear(8, 2))


def default_dtype_left() -> nn.Module:
    """``torch.set_default_dtype(torch.float64)`` left set by the constructor."""
    a = nn.Linear(4, 4)
    torch.set_default_dtype(torch.float64)
    return nn.Sequential(a, nn.Linear(4, 2), nn.Embedding(3, 4))


def lazy_modules() -> nn.Module:
    """Lazy modules sized by a dry run on a dummy input."""
    m = nn.Sequential(nn.LazyLinear(6), nn.ReLU(), nn.LazyLinear(2))
    m(torch.ones(3, 4))
    return m


def inference_mode_buffer() -> nn.Module:
    """Tensors computed under ``torch.inference_mode()`` in the constructor."""
    m = nn.Linear(6, 3)
    with torch.inference_mode():
        table = torch.arange(6.0).reshape(2, 3).flatten().repeat(2)
    m.register_buffer("table", table)
    return m


def load_state_dict_assign() -> nn.Module:
    """``load_state_dict(assign=True)`` of weights made in the constructor into a meta-built model."""
    source = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    with torch.device("meta"):
        m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    m.load_state_dict(source.state_dict(), assign=True)
    return m


def accelerate_empty_weights() -> nn.Module:
    """accelerate's ``init_empty_weights`` and ``set_module_tensor_to_device`` with new values."""
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device

    with init_empty_weights():
        m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    for name, param in list(m.named_parameters()):
        set_module_tensor_to_device(m, name, "cpu", value=torch.randn(param.shape) * 0.1)
    return m


def accelerate_partly_set() -> nn.Module:
    """``init_empty_weights`` with only the weights set: the biases stay on the meta device."""
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device

    with init_empty_weights():
        m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    for name in ("0.weight", "1.weight"):
        set_module_tensor_to_device(m, name, "cpu", value=torch.full(m.get_parameter(name).shape, 0.5))
    return m


class _EmptyInit(torch.overrides.TorchFunctionMode):
    """Lightning's ``init_module(empty_init=True)`` on one device: ``torch.nn.init`` calls do nothing."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def lightning_empty_init() -> nn.Module:
    """Lightning-style empty init: built with ``torch.nn.init`` skipped, then partly initialized."""
    with _EmptyInit():
        m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    nn.init.zeros_(m[1].bias)
    return m  # everything else is uninitialized memory


def cuda_method_on(device: str = "cuda") -> nn.Module:
    """``.cuda()`` inside the constructor (``.to(device)`` when ``device`` is ``"cpu"``)."""
    m = nn.Linear(3, 4)
    return m.cuda() if device == "cuda" else m.to(device)


def cuda_to_on(device: str = "cuda") -> nn.Module:
    """``.to("cuda")`` of a module and of a tensor, and ``device="cuda"`` factories without draws."""
    m = nn.Linear(3, 4).to(device)
    m.register_buffer("ones", torch.ones(4, device=device))
    m.register_buffer("moved", torch.arange(3.0).to(device))
    m.register_buffer("halves", torch.full((2,), 0.5).to(device, torch.float16))
    return m


def cuda_context_on(device: str = "cuda") -> nn.Module:
    """``with torch.device("cuda")`` around a constructor that draws (refused in rng="torch")."""
    with torch.device(device):
        return nn.Linear(3, 4)


def cuda_random_factory_on(device: str = "cuda") -> nn.Module:
    """A random factory on the accelerator (refused in rng="torch")."""
    m = nn.Module()
    m.p = nn.Parameter(torch.randn(10, device=device))
    return m


class TitanAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(dim, dim, bias=False) for _ in range(4))

    def init_weights(self, init_std: float) -> None:
        for linear in (self.wq, self.wk, self.wv):
            nn.init.trunc_normal_(linear.weight, mean=0.0, std=0.02)
        nn.init.trunc_normal_(self.wo.weight, mean=0.0, std=init_std)


class TitanBlock(nn.Module):
    def __init__(self, layer_id: int, dim: int, heads: int, layers: int) -> None:
        super().__init__()
        self.attention = TitanAttention(dim, heads)
        self.w1 = nn.Linear(dim, 2 * dim, bias=False)
        self.w2 = nn.Linear(2 * dim, dim, bias=False)
        self.attention_norm = nn.RMSNorm(dim)
        self.ffn_norm = nn.RMSNorm(dim)
        self.weight_init_std = 0.02 / (2 * (layer_id + 1)) ** 0.5

    def init_weights(self) -> None:
        for norm in (self.attention_norm, self.ffn_norm):
            norm.reset_parameters()
        self.attention.init_weights(self.weight_init_std)
        nn.init.trunc_normal_(self.w1.weight, mean=0.0, std=0.02)
        nn.init.trunc_normal_(self.w2.weight, mean=0.0, std=self.weight_init_std)


class TitanTransformer(nn.Module):
    """torchtitan's Llama in miniature: built on meta, then ``init_weights(buffer_device=...)``."""

    def __init__(self, dim: int = 16, heads: int = 2, layers: int = 2, vocab: int = 32, seq: int = 8) -> None:
        super().__init__()
        self.dim, self.heads, self.seq = dim, heads, seq
        self.tok_embeddings = nn.Embedding(vocab, dim)
        self.register_buffer("freqs_cis", self._precompute_freqs_cis(), persistent=False)
        self.layers = nn.ModuleDict({str(i): TitanBlock(i, dim, heads, layers) for i in range(layers)})
        self.norm = nn.RMSNorm(dim)
        self.output = nn.Linear(dim, vocab, bias=False)

    def _precompute_freqs_cis(self) -> torch.Tensor:
        head_dim = self.dim // self.heads
        freqs = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
        t = torch.arange(self.seq * 2, device=freqs.device)
        freqs = torch.outer(t, freqs).float()
        return torch.polar(torch.ones_like(freqs), freqs)

    def init_weights(self, buffer_device: torch.device | None = None) -> None:
        buffer_device = buffer_device or self.freqs_cis.device
        with torch.device(buffer_device):
            self.freqs_cis = self._precompute_freqs_cis()
        nn.init.normal_(self.tok_embeddings.weight)
        for layer in self.layers.values():
            layer.init_weights()
        self.norm.reset_parameters()
        final_out_std = self.dim**-0.5
        nn.init.trunc_normal_(self.output.weight, mean=0.0, std=final_out_std,
                              a=-3 * final_out_std, b=3 * final_out_std)


def torchtitan_meta() -> nn.Module:
    """torchtitan's flow: meta device, ``to_empty``, ``init_weights(buffer_device=...)`` under no_grad."""
    with torch.device("meta"):
        m = TitanTransformer()
    m.to_empty(device="cpu")
    with torch.no_grad():
        m.init_weights(buffer_device=torch.device("cpu"))
    return m


def _tiny_llama_config():  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=64, max_position_embeddings=32)


def _tiny_gpt2_config():  # type: ignore[no-untyped-def]
    from transformers import GPT2Config

    return GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=16, bos_token_id=0, eos_token_id=0)


def llama_meta() -> nn.Module:
    """A transformers model loaded the transformers-v5 way: meta device, ``to_empty``, ``init_weights()``."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        m = LlamaForCausalLM(_tiny_llama_config())
    m.to_empty(device="cpu")
    m.init_weights()
    return m


def gpt2_eager() -> nn.Module:
    """GPT-2's eager constructor (the reference of the audit how-to in docs/FLOWS.md)."""
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel(_tiny_gpt2_config())


def gpt2_meta_reset_parameters() -> nn.Module:
    """GPT-2 through a hand-written meta flow: ``to_empty`` and ``reset_parameters`` per module."""
    from transformers import GPT2LMHeadModel

    with torch.device("meta"):
        m = GPT2LMHeadModel(_tiny_gpt2_config())
    m.to_empty(device="cpu")
    for module in m.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return m


def gpt2_meta_init_weights() -> nn.Module:
    """GPT-2 through the meta flow transformers itself runs: ``to_empty`` and ``init_weights()``."""
    from transformers import GPT2LMHeadModel

    with torch.device("meta"):
        m = GPT2LMHeadModel(_tiny_gpt2_config())
    m.to_empty(device="cpu")
    m.init_weights()
    return m

