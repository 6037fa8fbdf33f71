"""A registry of tiny-config Hugging Face ``transformers`` models, built from config classes only.

Nothing here downloads anything: every builder instantiates a model class from a hand-written,
deliberately tiny config (hidden size 32-64, 1-2 layers, vocab ~100-200, small images), so that a
whole sweep over the registry runs in seconds on a CPU.

``ZOO`` maps a model name to a zero-argument builder returning a freshly initialized ``nn.Module``:
the ``CORE`` set of common architectures plus an ``EXTENDED`` set chosen for their less common init code.
"""

from __future__ import annotations

from typing import Callable

import torch

VOCAB = 128
HIDDEN = 32
HEADS = 4
INTER = 64

# Token ids that every config sets explicitly, so none of them lies beyond the tiny vocabulary.
TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _t():
    import transformers

    return transformers


def _decoder_lm(model_cls: str, config_cls: str, **overrides) -> Callable[[], torch.nn.Module]:
    """A Llama-style decoder-only LM (``hidden_size`` / ``num_hidden_layers`` naming)."""

    def build() -> torch.nn.Module:
        t = _t()
        kwargs = dict(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            intermediate_size=INTER,
            num_hidden_layers=2,
            num_attention_heads=HEADS,
            num_key_value_heads=2,
            max_position_embeddings=64,
            **TOKENS,
        )
        kwargs.update(overrides)
        return getattr(t, model_cls)(getattr(t, config_cls)(**kwargs))

    return build


# --------------------------------------------------------------------------- decoder-only LMs
def gpt2() -> torch.nn.Module:
    t = _t()
    cfg = t.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=HIDDEN, n_layer=2, n_head=HEADS, **TOKENS)
    return t.GPT2LMHeadModel(cfg)


def gpt_neo() -> torch.nn.Module:
    t = _t()
    cfg = t.GPTNeoConfig(
        vocab_size=VOCAB,
        max_position_embeddings=64,
        hidden_size=HIDDEN,
        num_layers=2,
        num_heads=HEADS,
        attention_types=[[["global", "local"], 1]],
        window_size=16,
        **TOKENS,
    )
    return t.GPTNeoForCausalLM(cfg)


def gpt_j() -> torch.nn.Module:
    t = _t()
    cfg = t.GPTJConfig(vocab_size=VOCAB, n_positions=64, n_embd=HIDDEN, n_layer=2, n_head=HEADS, rotary_dim=4, **TOKENS)
    return t.GPTJForCausalLM(cfg)


def gpt_neox() -> torch.nn.Module:
    t = _t()
    cfg = t.GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=INTER,
        max_position_embeddings=64,
        **TOKENS,
    )
    return t.GPTNeoXForCausalLM(cfg)


def falcon() -> torch.nn.Module:
    t = _t()
    cfg = t.FalconConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS, **TOKENS
    )
    return t.FalconForCausalLM(cfg)


def bloom() -> torch.nn.Module:
    t = _t()
    cfg = t.BloomConfig(vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=2, n_head=HEADS, **TOKENS)
    return t.BloomForCausalLM(cfg)


def opt() -> torch.nn.Module:
    t = _t()
    cfg = t.OPTConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        ffn_dim=INTER,
        num_attention_heads=HEADS,
        max_position_embeddings=64,
        word_embed_proj_dim=HIDDEN,
        **TOKENS,
    )
    return t.OPTForCausalLM(cfg)


def mpt() -> torch.nn.Module:
    t = _t()
    cfg = t.MptConfig(vocab_size=VOCAB, d_model=HIDDEN, n_heads=HEADS, n_layers=2, max_seq_len=64, **TOKENS)
    return t.MptForCausalLM(cfg)


def phi() -> torch.nn.Module:
    t = _t()
    cfg = t.PhiConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        max_position_embeddings=64,
        **TOKENS,
    )
    return t.PhiForCausalLM(cfg)


def mamba() -> torch.nn.Module:
    t = _t()
    cfg = t.MambaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4, **TOKENS
    )
    return t.MambaForCausalLM(cfg)


# --------------------------------------------------------------------------- encoders
def _bert_like(model_cls: str, config_cls: str, **overrides) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        t = _t()
        kwargs = dict(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=HEADS,
            intermediate_size=INTER,
            max_position_embeddings=64,
            type_vocab_size=2,
            **TOKENS,
        )
        kwargs.update(overrides)
        return getattr(t, model_cls)(getattr(t, config_cls)(**kwargs))

    return build


def albert() -> torch.nn.Module:
    t = _t()
    cfg = t.AlbertConfig(
        vocab_size=VOCAB,
        embedding_size=16,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=INTER,
        max_position_embeddings=64,
        **TOKENS,
    )
    return t.AlbertForMaskedLM(cfg)


def distilbert() -> torch.nn.Module:
    t = _t()
    cfg = t.DistilBertConfig(
        vocab_size=VOCAB, max_position_embeddings=64, n_layers=2, n_heads=HEADS, dim=HIDDEN, hidden_dim=INTER, pad_token_id=0
    )
    return t.DistilBertForMaskedLM(cfg)


def deberta_v2() -> torch.nn.Module:
    t = _t()
    cfg = t.DebertaV2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=INTER,
        max_position_embeddings=64,
        relative_attention=True,
        position_buckets=16,
        pos_att_type=["p2c", "c2p"],
        pad_token_id=0,
    )
    return t.DebertaV2ForMaskedLM(cfg)


def electra() -> torch.nn.Module:
    t = _t()
    cfg = t.ElectraConfig(
        vocab_size=VOCAB,
        embedding_size=16,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=INTER,
        max_position_embeddings=64,
        **TOKENS,
    )
    return t.ElectraForPreTraining(cfg)


# --------------------------------------------------------------------------- encoder-decoders
def t5() -> torch.nn.Module:
    t = _t()
    cfg = t.T5Config(
        vocab_size=VOCAB,
        d_model=HIDDEN,
        d_kv=8,
        d_ff=INTER,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=HEADS,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return t.T5ForConditionalGeneration(cfg)


def bart() -> torch.nn.Module:
    t = _t()
    cfg = t.BartConfig(
        vocab_size=VOCAB,
        d_model=HIDDEN,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=INTER,
        decoder_ffn_dim=INTER,
        max_position_embeddings=64,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
        **TOKENS,
    )
    return t.BartForConditionalGeneration(cfg)


def whisper() -> torch.nn.Module:
    t = _t()
    cfg = t.WhisperConfig(
        vocab_size=VOCAB,
        num_mel_bins=16,
        d_model=HIDDEN,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=INTER,
        decoder_ffn_dim=INTER,
        max_source_positions=32,
        max_target_positions=32,
        decoder_start_token_id=3,
        suppress_tokens=[],
        begin_suppress_tokens=[],
        **TOKENS,
    )
    return t.WhisperForConditionalGeneration(cfg)


# --------------------------------------------------------------------------- speech / vision
def wav2vec2() -> torch.nn.Module:
    t = _t()
    cfg = t.Wav2Vec2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=INTER,
        conv_dim=(16, 16),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        **TOKENS,
    )
    return t.Wav2Vec2ForCTC(cfg)


def vit() -> torch.nn.Module:
    t = _t()
    cfg = t.ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=INTER,
        num_labels=5,
    )
    return t.ViTForImageClassification(cfg)


def swin() -> torch.nn.Module:
    t = _t()
    cfg = t.SwinConfig(
        image_size=32,
        patch_size=4,
        num_channels=3,
        embed_dim=16,
        depths=[1, 1],
        num_heads=[2, 4],
        window_size=4,
        num_labels=5,
    )
    return t.SwinForImageClassification(cfg)


def convnext() -> torch.nn.Module:
    t = _t()
    cfg = t.ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=5)
    return t.ConvNextForImageClassification(cfg)


def resnet() -> torch.nn.Module:
    t = _t()
    cfg = t.ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], num_labels=5)
    return t.ResNetForImageClassification(cfg)


def clip() -> torch.nn.Module:
    t = _t()
    text = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        max_position_embeddings=32,
        **TOKENS,
    )
    vision = dict(
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        image_size=16,
        patch_size=4,
    )
    cfg = t.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    return t.CLIPModel(cfg)


CORE: dict[str, Callable[[], torch.nn.Module]] = {
    # decoder-only
    "gpt2": gpt2,
    "gpt_neo": gpt_neo,
    "gpt_j": gpt_j,
    "gpt_neox": gpt_neox,
    "llama": _decoder_lm("LlamaForCausalLM", "LlamaConfig"),
    "mistral": _decoder_lm("MistralForCausalLM", "MistralConfig", sliding_window=16),
    "mixtral": _decoder_lm(
        "MixtralForCausalLM", "MixtralConfig", num_local_experts=4, num_experts_per_tok=2, sliding_window=16
    ),
    "qwen2": _decoder_lm("Qwen2ForCausalLM", "Qwen2Config"),
    "qwen2_moe": _decoder_lm(
        "Qwen2MoeForCausalLM",
        "Qwen2MoeConfig",
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
    ),
    "qwen3": _decoder_lm("Qwen3ForCausalLM", "Qwen3Config", head_dim=8),
    "gemma": _decoder_lm("GemmaForCausalLM", "GemmaConfig", head_dim=8),
    "gemma2": _decoder_lm("Gemma2ForCausalLM", "Gemma2Config", head_dim=8, sliding_window=16),
    "phi": phi,
    "phi3": _decoder_lm("Phi3ForCausalLM", "Phi3Config"),
    "stablelm": _decoder_lm("StableLmForCausalLM", "StableLmConfig"),
    "olmo": _decoder_lm("OlmoForCausalLM", "OlmoConfig"),
    "falcon": falcon,
    "bloom": bloom,
    "opt": opt,
    "mpt": mpt,
    "mamba": mamba,
    # encoders
    "bert": _bert_like("BertForMaskedLM", "BertConfig"),
    "roberta": _bert_like("RobertaForMaskedLM", "RobertaConfig", max_position_embeddings=66),
    "deberta_v2": deberta_v2,
    "albert": albert,
    "distilbert": distilbert,
    "electra": electra,
    # encoder-decoders
    "t5": t5,
    "bart": bart,
    "whisper": whisper,
    # speech / vision / multimodal
    "wav2vec2": wav2vec2,
    "vit": vit,
    "swin": swin,
    "convnext": convnext,
    "resnet": resnet,
    "clip": clip,
}

# --------------------------------------------------------------------------- extended set
# Further architectures, each chosen for an init path the core set does not exercise (truncated
# normal, numpy sin-cos tables, relative-position index buffers, weight norm, LSTMs, orthogonal init,
# MoE expert tensors, SSM parameters, ...).  They are built through one generic helper.
def _hf(model_cls: str, config_cls: str, **kwargs) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        t = _t()
        return getattr(t, model_cls)(getattr(t, config_cls)(**kwargs))

    build.__name__ = model_cls
    return build


_LLAMA = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=INTER,
    num_hidden_layers=2,
    num_attention_heads=HEADS,
    num_key_value_heads=2,
    max_position_embeddings=64,
    **TOKENS,
)
_BERT = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_hidden_layers=2,
    num_attention_heads=HEADS,
    intermediate_size=INTER,
    max_position_embeddings=64,
    **TOKENS,
)
_SEQ2SEQ = dict(
    vocab_size=VOCAB,
    d_model=HIDDEN,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=HEADS,
    decoder_attention_heads=HEADS,
    encoder_ffn_dim=INTER,
    decoder_ffn_dim=INTER,
    decoder_start_token_id=2,
    **TOKENS,
)
_VIT = dict(
    image_size=16,
    patch_size=4,
    num_channels=3,
    hidden_size=HIDDEN,
    num_hidden_layers=2,
    num_attention_heads=HEADS,
    intermediate_size=INTER,
)
_SPEECH = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_hidden_layers=2,
    num_attention_heads=HEADS,
    intermediate_size=INTER,
    conv_dim=(16, 16),
    conv_stride=(5, 2),
    conv_kernel=(10, 3),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    **TOKENS,
)
_T5 = dict(
    vocab_size=VOCAB,
    d_model=HIDDEN,
    d_kv=8,
    d_ff=INTER,
    num_heads=HEADS,
    relative_attention_num_buckets=8,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)

EXTENDED: dict[str, Callable[[], torch.nn.Module]] = {
    # decoder-only and state-space LMs
    "gemma3": _hf("Gemma3ForCausalLM", "Gemma3TextConfig", **_LLAMA, head_dim=8, sliding_window=16),
    "qwen3_moe": _hf(
        "Qwen3MoeForCausalLM", "Qwen3MoeConfig", **_LLAMA, head_dim=8, num_experts=4, num_experts_per_tok=2,
        moe_intermediate_size=32,
    ),
    "olmoe": _hf("OlmoeForCausalLM", "OlmoeConfig", **_LLAMA, num_experts=4, num_experts_per_tok=2),
    "deepseek_v3": _hf(
        "DeepseekV3ForCausalLM", "DeepseekV3Config", **{**_LLAMA, "num_key_value_heads": HEADS},
        moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
        first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
        v_head_dim=8,
    ),
    "gpt_oss": _hf(
        "GptOssForCausalLM", "GptOssConfig", **{**_LLAMA, "max_position_embeddings": 131072}, head_dim=8,
        num_local_experts=4, num_experts_per_tok=2, sliding_window=16,
    ),
    "gpt_bigcode": _hf(
        "GPTBigCodeForCausalLM", "GPTBigCodeConfig", vocab_size=VOCAB, n_positions=64, n_embd=HIDDEN, n_layer=2,
        n_head=HEADS, **TOKENS,
    ),
    "codegen": _hf(
        "CodeGenForCausalLM", "CodeGenConfig", vocab_size=VOCAB, n_positions=64, n_ctx=64, n_embd=HIDDEN, n_layer=2,
        n_head=HEADS, rotary_dim=4, **TOKENS,
    ),
    "ctrl": _hf(
        "CTRLLMHeadModel", "CTRLConfig", vocab_size=VOCAB, n_positions=64, n_embd=HIDDEN, dff=INTER, n_layer=2,
        n_head=HEADS, **TOKENS,
    ),
    "xglm": _hf(
        "XGLMForCausalLM", "XGLMConfig", vocab_size=VOCAB, max_position_embeddings=64, d_model=HIDDEN, ffn_dim=INTER,
        num_layers=2, attention_heads=HEADS, **TOKENS,
    ),
    "biogpt": _hf("BioGptForCausalLM", "BioGptConfig", **_BERT),
    "xlnet": _hf(
        "XLNetLMHeadModel", "XLNetConfig", vocab_size=VOCAB, d_model=HIDDEN, n_layer=2, n_head=HEADS, d_inner=INTER,
        **TOKENS,
    ),
    "rwkv": _hf(
        "RwkvForCausalLM", "RwkvConfig", vocab_size=VOCAB, context_length=64, hidden_size=HIDDEN,
        num_hidden_layers=2, attention_hidden_size=HIDDEN, intermediate_size=INTER, bos_token_id=1, eos_token_id=2,
    ),
    "mamba2": _hf(
        "Mamba2ForCausalLM", "Mamba2Config", vocab_size=VOCAB, hidden_size=HIDDEN, state_size=8,
        num_hidden_layers=2, expand=2, n_groups=1, head_dim=8, num_heads=8, conv_kernel=4, **TOKENS,
    ),
    "falcon_mamba": _hf(
        "FalconMambaForCausalLM", "FalconMambaConfig", vocab_size=VOCAB, hidden_size=HIDDEN, state_size=8,
        num_hidden_layers=2, expand=2, conv_kernel=4, **TOKENS,
    ),
    "jamba": _hf(
        "JambaForCausalLM", "JambaConfig", **_LLAMA, num_experts=2, num_experts_per_tok=1, mamba_d_state=8,
        mamba_d_conv=4, mamba_expand=2, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
        expert_layer_offset=1,
    ),
    "recurrent_gemma": _hf(
        "RecurrentGemmaForCausalLM", "RecurrentGemmaConfig", vocab_size=VOCAB, hidden_size=HIDDEN,
        intermediate_size=INTER, num_hidden_layers=2, num_attention_heads=HEADS, num_key_value_heads=1,
        lru_width=HIDDEN, attention_window_size=16, conv1d_width=4, block_types=["recurrent", "attention"],
        head_dim=8, **TOKENS,
    ),
    # encoders
    "deberta": _hf("DebertaForMaskedLM", "DebertaConfig", **_BERT, relative_attention=True, pos_att_type=["p2c", "c2p"]),
    "longformer": _hf(
        "LongformerForMaskedLM", "LongformerConfig", **{**_BERT, "max_position_embeddings": 66}, attention_window=8
    ),
    "big_bird": _hf("BigBirdForMaskedLM", "BigBirdConfig", **_BERT, attention_type="original_full"),
    "mpnet": _hf(
        "MPNetForMaskedLM", "MPNetConfig", **{**_BERT, "max_position_embeddings": 66}, relative_attention_num_buckets=8
    ),
    "funnel": _hf(
        "FunnelForMaskedLM", "FunnelConfig", vocab_size=VOCAB, block_sizes=[1, 1], d_model=HIDDEN, n_head=HEADS,
        d_head=8, d_inner=INTER, pad_token_id=0,
    ),
    "esm": _hf(
        "EsmForMaskedLM", "EsmConfig", vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2,
        num_attention_heads=HEADS, intermediate_size=INTER, max_position_embeddings=64, pad_token_id=0,
        mask_token_id=3,
    ),
    "modernbert": _hf(
        "ModernBertForMaskedLM", "ModernBertConfig", vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER,
        num_hidden_layers=2, num_attention_heads=HEADS, max_position_embeddings=64, cls_token_id=1, sep_token_id=2,
        **TOKENS,
    ),
    "perceiver": _hf(
        "PerceiverForMaskedLM", "PerceiverConfig", num_latents=8, d_latents=32, d_model=32, num_blocks=1,
        num_self_attends_per_block=1, num_self_attention_heads=2, num_cross_attention_heads=2, vocab_size=VOCAB,
        max_position_embeddings=64,
    ),
    # encoder-decoders
    "marian": _hf("MarianMTModel", "MarianConfig", **_SEQ2SEQ, max_position_embeddings=64),
    "pegasus": _hf("PegasusForConditionalGeneration", "PegasusConfig", **_SEQ2SEQ, max_position_embeddings=64),
    "m2m100": _hf("M2M100ForConditionalGeneration", "M2M100Config", **_SEQ2SEQ, max_position_embeddings=64),
    "led": _hf(
        "LEDForConditionalGeneration", "LEDConfig", **_SEQ2SEQ, max_encoder_position_embeddings=64,
        max_decoder_position_embeddings=64, attention_window=8,
    ),
    "prophetnet": _hf(
        "ProphetNetForConditionalGeneration", "ProphetNetConfig", vocab_size=VOCAB, hidden_size=HIDDEN,
        encoder_ffn_dim=INTER, decoder_ffn_dim=INTER, num_encoder_layers=1, num_decoder_layers=1,
        num_encoder_attention_heads=HEADS, num_decoder_attention_heads=HEADS, max_position_embeddings=64, ngram=2,
        num_buckets=8, relative_max_distance=16, decoder_start_token_id=0, **TOKENS,
    ),
    "switch_transformers": _hf(
        "SwitchTransformersForConditionalGeneration", "SwitchTransformersConfig", **_T5, num_layers=2,
        num_decoder_layers=2, num_experts=2, encoder_sparse_step=1, decoder_sparse_step=1,
    ),
    "umt5": _hf("UMT5ForConditionalGeneration", "UMT5Config", **_T5, num_layers=1),
    "speech_to_text": _hf(
        "Speech2TextForConditionalGeneration", "Speech2TextConfig", **_SEQ2SEQ, max_source_positions=64,
        max_target_positions=64, input_feat_per_channel=16, num_conv_layers=1, conv_kernel_sizes=(5,),
        conv_channels=16,
    ),
    "speecht5": _hf(
        "SpeechT5ForTextToSpeech", "SpeechT5Config", **{k: v for k, v in _SPEECH.items() if k != "num_hidden_layers"},
        encoder_layers=1, decoder_layers=1, encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
        encoder_ffn_dim=INTER, decoder_ffn_dim=INTER, num_mel_bins=16, speech_decoder_prenet_units=16,
        speech_decoder_postnet_units=16, speech_decoder_postnet_layers=2, speaker_embedding_dim=16,
        max_speech_positions=64, max_text_positions=64,
    ),
    # speech
    "hubert": _hf("HubertForCTC", "HubertConfig", **_SPEECH),
    "wavlm": _hf("WavLMForCTC", "WavLMConfig", **_SPEECH, num_buckets=16, max_bucket_distance=32),
    "encodec": _hf(
        "EncodecModel", "EncodecConfig", hidden_size=16, num_filters=4, num_residual_layers=1,
        upsampling_ratios=[2, 2], codebook_size=16, codebook_dim=16, num_lstm_layers=1,
    ),
    "ast": _hf(
        "ASTForAudioClassification", "ASTConfig", hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=HEADS,
        intermediate_size=INTER, patch_size=8, frequency_stride=8, time_stride=8, max_length=32, num_mel_bins=16,
    ),
    # vision and video
    "dinov2": _hf("Dinov2Model", "Dinov2Config", **_VIT),
    "beit": _hf("BeitForImageClassification", "BeitConfig", **_VIT, use_relative_position_bias=True),
    "vit_mae": _hf(
        "ViTMAEForPreTraining", "ViTMAEConfig", **_VIT, decoder_hidden_size=HIDDEN, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=HEADS, decoder_intermediate_size=INTER,
    ),
    "videomae": _hf(
        "VideoMAEForPreTraining", "VideoMAEConfig", **_VIT, num_frames=2, tubelet_size=2, decoder_hidden_size=HIDDEN,
        decoder_num_hidden_layers=1, decoder_num_attention_heads=HEADS, decoder_intermediate_size=INTER,
    ),
    "timesformer": _hf("TimesformerForVideoClassification", "TimesformerConfig", **_VIT, num_frames=2),
    "swinv2": _hf(
        "Swinv2ForImageClassification", "Swinv2Config", image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
        num_heads=[2, 4], window_size=4,
    ),
    "levit": _hf(
        "LevitForImageClassification", "LevitConfig", image_size=32, hidden_sizes=[16, 32, 48],
        num_attention_heads=[1, 2, 3], depths=[1, 1, 1], key_dim=[8, 8, 8],
    ),
    "segformer": _hf(
        "SegformerForSemanticSegmentation", "SegformerConfig", num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
        hidden_sizes=[16, 32], num_attention_heads=[1, 2], decoder_hidden_size=32, patch_sizes=[7, 3], strides=[4, 2],
    ),
    "convnextv2": _hf(
        "ConvNextV2ForImageClassification", "ConvNextV2Config", num_stages=2, hidden_sizes=[16, 32], depths=[1, 1]
    ),
    "regnet": _hf(
        "RegNetForImageClassification", "RegNetConfig", embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
        groups_width=8,
    ),
    "efficientnet": _hf(
        "EfficientNetForImageClassification", "EfficientNetConfig", image_size=32, width_coefficient=0.25,
        depth_coefficient=0.25, hidden_dim=64,
    ),
    "mobilenet_v2": _hf("MobileNetV2ForImageClassification", "MobileNetV2Config", image_size=32, depth_multiplier=0.25),
    "bit": _hf(
        "BitForImageClassification", "BitConfig", embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
        num_groups=8, layer_type="preactivation",
    ),
    "siglip": _hf(
        "SiglipModel", "SiglipConfig",
        text_config=dict(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=1,
            num_attention_heads=HEADS, max_position_embeddings=32, **TOKENS,
        ),
        vision_config=dict(
            hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=1, num_attention_heads=HEADS,
            image_size=16, patch_size=4,
        ),
    ),
    "sam": _hf(
        "SamModel", "SamConfig",
        vision_config=dict(
            hidden_size=HIDDEN, output_channels=16, num_hidden_layers=1, num_attention_heads=HEADS, image_size=32,
            patch_size=8, mlp_dim=INTER, window_size=2, global_attn_indexes=[0], num_pos_feats=8,
        ),
        prompt_encoder_config=dict(
            hidden_size=16, image_size=32, patch_size=8, mask_input_channels=4, image_embedding_size=4
        ),
        mask_decoder_config=dict(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16
        ),
    ),
}

ZOO: dict[str, Callable[[], torch.nn.Module]] = {**CORE, **EXTENDED}
"""Every model of the registry, name -> zero-argument builder."""
