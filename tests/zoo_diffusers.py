"""A registry of tiny-config ``diffusers`` models, built from constructor arguments only.

Nothing here downloads anything: every builder instantiates a model class with deliberately tiny
channel counts, one or two layers and small sample sizes, so that recording, replaying and building
each one eagerly takes well under a second on a CPU.

``ZOO`` maps a model name to a zero-argument builder returning a freshly initialized ``nn.Module``:
``CORE`` (the UNets, the VAE and the DiT/Flux/SD3/PixArt transformers people train) plus
``EXTENDED`` (video, audio and other transformer and autoencoder families).
"""

from __future__ import annotations

from typing import Any, Callable

import torch


def _model(cls: str, **kwargs: Any) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import diffusers

        return getattr(diffusers, cls)(**kwargs)

    build.__name__ = cls
    return build


CORE: dict[str, Callable[[], torch.nn.Module]] = {
    "unet2d": _model("UNet2DModel", block_out_channels=(4, 8), norm_num_groups=2, down_block_types=("DownBlock2D",
        "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=3, out_channels=3,
        in_channels=3, layers_per_block=1, sample_size=16),
    "unet2d_condition": _model("UNet2DConditionModel", block_out_channels=(4, 8), norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, out_channels=4, in_channels=4, layers_per_block=1,
        sample_size=16),
    "autoencoder_kl": _model("AutoencoderKL", block_out_channels=[4, 8], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4,
        norm_num_groups=2),
    "dit": _model("DiTTransformer2DModel", in_channels=4, out_channels=8, activation_fn="gelu-approximate",
        num_attention_heads=2, attention_head_dim=4, num_layers=1, norm_type="ada_norm_zero", num_embeds_ada_norm=8,
        patch_size=2, sample_size=8),
    "flux": _model("FluxTransformer2DModel", patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8]),
    "sd3": _model("SD3Transformer2DModel", sample_size=32, patch_size=1, in_channels=4, num_layers=1,
        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
        pooled_projection_dim=64, out_channels=4),
    "pixart": _model("PixArtTransformer2DModel", sample_size=8, num_layers=1, patch_size=2, attention_head_dim=2,
        num_attention_heads=2, in_channels=4, cross_attention_dim=8, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=8, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, use_additional_conditions=False, caption_channels=None),
}

EXTENDED: dict[str, Callable[[], torch.nn.Module]] = {
    "vq": _model("VQModel", block_out_channels=[4, 8], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=3,
        norm_num_groups=2, num_vq_embeddings=16),
    "autoencoder_tiny": _model("AutoencoderTiny", in_channels=3, out_channels=3, encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4),
    "unet1d": _model("UNet1DModel", block_out_channels=(8, 16), in_channels=2, out_channels=2, extra_in_channels=16,
        down_block_types=("DownBlock1D", "AttnDownBlock1D"), up_block_types=("AttnUpBlock1D", "UpBlock1DNoSkip"),
        mid_block_type="UNetMidBlock1D"),
    "prior": _model("PriorTransformer", num_attention_heads=2, attention_head_dim=4, num_layers=2, embedding_dim=8,
        num_embeddings=7, additional_embeddings=4),
    "controlnet": _model("ControlNetModel", block_out_channels=(4, 8), norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), cross_attention_dim=8, attention_head_dim=2,
        in_channels=4, layers_per_block=1, conditioning_embedding_out_channels=(4, 8)),
    "uvit2d": _model("UVit2DModel", hidden_size=16, use_bias=False, hidden_dropout=0.0, cond_embed_dim=8,
        micro_cond_encode_dim=2, micro_cond_embed_dim=10, encoder_hidden_size=8, vocab_size=12, codebook_size=12,
        in_channels=8, block_out_channels=8, num_res_blocks=1, downsample=True, upsample=True, block_num_heads=1,
        num_hidden_layers=1, num_attention_heads=1, attention_dropout=0.0, intermediate_size=8, layer_norm_eps=1e-6,
        ln_elementwise_affine=True),
    "transformer2d": _model("Transformer2DModel", num_attention_heads=2, attention_head_dim=4, in_channels=4,
        num_layers=1, norm_num_groups=2, cross_attention_dim=8),
    "sana": _model("SanaTransformer2DModel", patch_size=1, in_channels=4, out_channels=4, num_layers=1,
        attention_head_dim=4, num_attention_heads=2, num_cross_attention_heads=2, cross_attention_head_dim=4,
        cross_attention_dim=8, caption_channels=8, sample_size=32),
    "hunyuan_dit": _model("HunyuanDiT2DModel", sample_size=8, patch_size=2, in_channels=4, num_layers=1,
        attention_head_dim=8, num_attention_heads=2, cross_attention_dim=8, cross_attention_dim_t5=8,
        pooled_projection_dim=4, hidden_size=16, text_len=4, text_len_t5=4, activation_fn="gelu-approximate"),
    "cogvideox": _model("CogVideoXTransformer3DModel", num_attention_heads=2, attention_head_dim=8, in_channels=4,
        out_channels=4, time_embed_dim=2, text_embed_dim=8, num_layers=1, sample_width=8, sample_height=8,
        sample_frames=8, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=8),
    "ltx_video": _model("LTXVideoTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, num_layers=1, caption_channels=16),
    "wan": _model("WanTransformer3DModel", patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
        in_channels=4, out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32),
    "auraflow": _model("AuraFlowTransformer2DModel", sample_size=32, patch_size=2, in_channels=4, num_mmdit_layers=1,
        num_single_dit_layers=1, attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
        joint_attention_dim=32, out_channels=4, pos_embed_max_size=256),
    "lumina2": _model("Lumina2Transformer2DModel", sample_size=16, patch_size=2, in_channels=4, hidden_size=24,
        num_layers=2, num_refiner_layers=1, num_attention_heads=3, num_kv_heads=1, multiple_of=2,
        ffn_dim_multiplier=None, norm_eps=1e-5, scaling_factor=1.0, axes_dim_rope=(4, 2, 2), axes_lens=(128, 128,
        128), cap_feat_dim=8),
    "unet3d": _model("UNet3DConditionModel", block_out_channels=(8,), norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock3D",), up_block_types=("CrossAttnUpBlock3D",), cross_attention_dim=8,
        attention_head_dim=2, out_channels=4, in_channels=4, layers_per_block=1, sample_size=16),
    "autoencoder_kl_wan": _model("AutoencoderKLWan", base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True]),
    "autoencoder_dc": _model("AutoencoderDC", in_channels=3, latent_channels=4, attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"), decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)),
        decoder_qkv_multiscales=((), (5,)), encoder_layers_per_block=(1, 1), decoder_layers_per_block=[1, 1],
        downsample_block_type="conv", upsample_block_type="interpolate", decoder_norm_types="rms_norm",
        decoder_act_fns="silu", scaling_factor=0.41407),
    "qwen_image": _model("QwenImageTransformer2DModel", patch_size=2, in_channels=16, out_channels=4, num_layers=2,
        attention_head_dim=16, num_attention_heads=3, joint_attention_dim=16, guidance_embeds=False,
        axes_dims_rope=(8, 4, 4)),
    "chroma": _model("ChromaTransformer2DModel", patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=[4, 4, 8],
        approximator_hidden_dim=32, approximator_layers=1, approximator_num_channels=16),
    "mochi": _model("MochiTransformer3DModel", patch_size=2, num_attention_heads=2, attention_head_dim=8,
        num_layers=2, pooled_projection_dim=16, in_channels=12, out_channels=None, qk_norm="rms_norm",
        text_embed_dim=32, time_embed_dim=4, activation_fn="swiglu", max_sequence_length=16),
    "hunyuan_video": _model("HunyuanVideoTransformer3DModel", in_channels=4, out_channels=4, num_attention_heads=2,
        attention_head_dim=10, num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1,
        guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4)),
    "asym_kl": _model("AsymmetricAutoencoderKL", in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2, down_block_out_channels=[4, 8], layers_per_down_block=1,
        up_block_types=["UpDecoderBlock2D"] * 2, up_block_out_channels=[4, 8], layers_per_up_block=1, act_fn="silu",
        latent_channels=4, norm_num_groups=2, sample_size=32, scaling_factor=0.18215),
    "oobleck": _model("AutoencoderOobleck", encoder_hidden_size=4, decoder_channels=4, decoder_input_channels=2,
        audio_channels=2, downsampling_ratios=[2], channel_multiples=[1]),
    "stable_audio_dit": _model("StableAudioDiTModel", sample_size=4, in_channels=3, num_layers=2,
        attention_head_dim=4, num_key_value_attention_heads=2, out_channels=3, cross_attention_dim=4, time_proj_dim=8,
        global_states_input_dim=8, cross_attention_input_dim=4),
    "unet_spatio_temporal": _model("UNetSpatioTemporalConditionModel", block_out_channels=(32,),
        down_block_types=("CrossAttnDownBlockSpatioTemporal",), up_block_types=("CrossAttnUpBlockSpatioTemporal",),
        cross_attention_dim=8, num_attention_heads=(2,), out_channels=4, in_channels=4, layers_per_block=1,
        sample_size=16, projection_class_embeddings_input_dim=6, addition_time_embed_dim=2),
    "flux2": _model("Flux2Transformer2DModel", patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16, timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4)),
    "unet_motion": _model("UNetMotionModel", block_out_channels=(8,), norm_num_groups=4,
        down_block_types=("CrossAttnDownBlockMotion",), up_block_types=("CrossAttnUpBlockMotion",),
        cross_attention_dim=8, num_attention_heads=2, out_channels=4, in_channels=4, layers_per_block=1,
        sample_size=16, motion_num_attention_heads=2, motion_max_seq_length=8),
    "controlnet_xs": _model("UNetControlNetXSModel", sample_size=16, down_block_types=("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",), block_out_channels=(8,), cross_attention_dim=8,
        transformer_layers_per_block=1, num_attention_heads=2, norm_num_groups=4, upcast_attention=False,
        ctrl_block_out_channels=[4], ctrl_num_attention_heads=2, ctrl_max_norm_num_groups=2,
        ctrl_conditioning_embedding_out_channels=(2, 2)),
    "latte": _model("LatteTransformer3DModel", sample_size=8, num_layers=1, patch_size=2, attention_head_dim=4,
        num_attention_heads=2, caption_channels=8, in_channels=4, cross_attention_dim=8, out_channels=8,
        attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, video_length=2),
    "cogview4": _model("CogView4Transformer2DModel", patch_size=2, in_channels=4, num_layers=2, attention_head_dim=4,
        num_attention_heads=4, out_channels=4, text_embed_dim=8, time_embed_dim=8, condition_dim=4,
        pos_embed_max_size=16, sample_size=16, rope_axes_dim=(4, 4)),
    "autoencoder_kl_cogvideox": _model("AutoencoderKLCogVideoX", block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4),
    "autoencoder_kl_hunyuan_video": _model("AutoencoderKLHunyuanVideo", in_channels=3, out_channels=3,
        latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
        spatial_compression_ratio=8, temporal_compression_ratio=4, mid_block_add_attention=True),
    "autoencoder_kl_ltx_video": _model("AutoencoderKLLTXVideo", in_channels=3, out_channels=3, latent_channels=8,
        block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False, False, False, False,
        False), upsample_residual=(False, False, False, False), upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False),
    "zimage": _model("ZImageTransformer2DModel", all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32,
        n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=16, axes_dims=[8, 4, 4], axes_lens=[64,
        32, 32]),
    "omnigen": _model("OmniGenTransformer2DModel", hidden_size=16, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=32, num_layers=1, in_channels=4, time_step_dim=4, rope_scaling={"long_factor": list(range(1,
        3)), "short_factor": list(range(1, 3))}, vocab_size=64, pad_token_id=0, max_position_embeddings=64,
        original_max_position_embeddings=16, pos_embed_max_size=16),
    "hidream": _model("HiDreamImageTransformer2DModel", patch_size=2, in_channels=4, out_channels=4, num_layers=1,
        num_single_layers=1, attention_head_dim=8, num_attention_heads=4, caption_channels=[8, 4], text_emb_dim=8,
        num_routed_experts=2, num_activated_experts=2, axes_dims_rope=(4, 4), max_resolution=(32, 32),
        llama_layers=(0, 1)),
}

ZOO: dict[str, Callable[[], torch.nn.Module]] = {**CORE, **EXTENDED}
"""Every model of the registry, name -> zero-argument builder."""
