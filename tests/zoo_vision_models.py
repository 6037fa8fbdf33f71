"""The timm and torchvision registries: tiny or stock configs, built from arguments only.

Nothing is downloaded: timm models get ``pretrained=False``, torchvision ones ``weights=None``
(and ``weights_backbone=None``), all with 10 classes, in tiny variants where the library takes size
arguments.  torchvision is imported through :mod:`torchvision_shim` (PyPI's torchvision 0.28.0
beside the CPU torch 2.13.0).  ``tests/test_zoo_vision.py`` checks ``TIMM_CI`` and
``TORCHVISION_CI`` in the normal test run; ``tools/zoo_vision.py`` checks every model, with the
portable shard check too, and prints the table of ``docs/ZOO.md``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch

from torchvision_shim import import_torchvision

ModelFn = Callable[[], torch.nn.Module]

# timm: model name -> size arguments (every model also gets pretrained=False, num_classes=10).
TIMM: dict[str, dict[str, Any]] = {
    # the architectures the issue names
    "vit_tiny_patch16_224": dict(img_size=32, patch_size=8, depth=2),
    "deit_tiny_distilled_patch16_224": dict(img_size=32, patch_size=8, depth=2),
    "swin_tiny_patch4_window7_224": dict(img_size=64, window_size=4, embed_dim=24, depths=(1, 1, 1, 1),
                                         num_heads=(1, 2, 3, 3)),
    "convnext_atto": dict(depths=(1, 1, 1, 1)),
    "resnet18": dict(),
    "efficientnet_b0": dict(),
    "mobilenetv3_small_050": dict(),
    "regnetx_002": dict(),
    "eva02_tiny_patch14_224": dict(img_size=28, depth=2),
    "beit_base_patch16_224": dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2),
    "levit_128s": dict(),
    "mixer_s16_224": dict(img_size=32),
    "maxvit_pico_rw_256": dict(img_size=64),
    "fastvit_t8": dict(),
    "eca_nfnet_l0": dict(),
    "dm_nfnet_f0": dict(),
    # more families, for their less common init code
    "coatnet_nano_rw_224": dict(),
    "mobilevit_xxs": dict(),
    "efficientformer_l1": dict(),
    "poolformer_s12": dict(),
    "cait_xxs24_224": dict(img_size=32, patch_size=8, depth=2),
    "xcit_nano_12_p16_224": dict(img_size=32, depth=2),
    "pit_ti_224": dict(),
    "pvt_v2_b0": dict(),
    "convmixer_768_32": dict(),
    "densenet121": dict(),
    "ghostnet_100": dict(),
    "hrnet_w18_small": dict(),
    "inception_v3": dict(),
    "mobileone_s0": dict(),
    "repvgg_a0": dict(),
    "rexnet_100": dict(),
    "edgenext_xx_small": dict(),
    "gcvit_xxtiny": dict(),
    "davit_tiny": dict(depths=(1, 1, 1, 1)),
    "hiera_tiny_224": dict(),
    "mambaout_femto": dict(),
    "regnety_002": dict(),
    "resnest14d": dict(),
    "res2net50_14w_8s": dict(),
    "cspdarknet53": dict(),
    "efficientvit_b0": dict(),
    "repvit_m1": dict(),
    "tiny_vit_5m_224": dict(),
    "convit_tiny": dict(img_size=32, patch_size=8, depth=2),
    "crossvit_tiny_240": dict(),
    "twins_pcpvt_small": dict(depths=(1, 1, 1, 1)),
    "vit_base_patch16_siglip_224": dict(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2),
    "deit3_small_patch16_224": dict(img_size=32, patch_size=8, depth=2),
    "flexivit_small": dict(img_size=32, patch_size=8, depth=2),
    "samvit_base_patch16": dict(img_size=64, depth=2, embed_dim=64, num_heads=2, global_attn_indexes=(1,)),
    "vgg11": dict(),
    "nest_tiny": dict(),
    "sequencer2d_s": dict(),
    "volo_d1_224": dict(),
    "tnt_s_patch16_224": dict(img_size=32, depth=2),
}


def timm_zoo() -> dict[str, ModelFn]:
    import_torchvision()  # timm imports torchvision
    import timm

    def build(name: str, kwargs: dict[str, Any]) -> torch.nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)

    return {name: partial(build, name, kwargs) for name, kwargs in TIMM.items()}


def torchvision_zoo() -> dict[str, ModelFn]:
    import_torchvision()
    from torchvision import models as m
    from torchvision.models import detection, optical_flow, segmentation, video
    from torchvision.models.convnext import CNBlockConfig

    def builder(name: str, **kwargs: Any) -> ModelFn:
        return partial(m.get_model, name, weights=None, **kwargs)

    tiny_convnext = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)]
    return {
        "resnet18": builder("resnet18", num_classes=10),
        "resnet50": builder("resnet50", num_classes=10),
        "resnext50_32x4d": builder("resnext50_32x4d", num_classes=10),
        "wide_resnet50_2": builder("wide_resnet50_2", num_classes=10),
        "VisionTransformer (vit_b_16 family, tiny)": partial(
            m.VisionTransformer, image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
            num_classes=10,
        ),
        "vit_b_32": builder("vit_b_32", num_classes=10),
        "ConvNeXt (convnext_tiny family, tiny)": partial(m.ConvNeXt, tiny_convnext, num_classes=10),
        "convnext_tiny": builder("convnext_tiny", num_classes=10),
        "efficientnet_b0": builder("efficientnet_b0", num_classes=10),
        "efficientnet_v2_s": builder("efficientnet_v2_s", num_classes=10),
        "mobilenet_v2": builder("mobilenet_v2", num_classes=10),
        "mobilenet_v3_small": builder("mobilenet_v3_small", num_classes=10),
        "mobilenet_v3_large": builder("mobilenet_v3_large", num_classes=10),
        "regnet_x_400mf": builder("regnet_x_400mf", num_classes=10),
        "regnet_y_400mf": builder("regnet_y_400mf", num_classes=10),
        "SwinTransformer (swin_t family, tiny)": partial(
            m.SwinTransformer, patch_size=[4, 4], embed_dim=24, depths=[1, 1, 1, 1], num_heads=[1, 2, 3, 3],
            window_size=[4, 4], num_classes=10,
        ),
        "swin_t": builder("swin_t", num_classes=10),
        "swin_v2_t": builder("swin_v2_t", num_classes=10),
        "maxvit_t": builder("maxvit_t", num_classes=10),
        "densenet121": builder("densenet121", num_classes=10),
        "squeezenet1_0": builder("squeezenet1_0", num_classes=10),
        "squeezenet1_1": builder("squeezenet1_1", num_classes=10),
        "shufflenet_v2_x0_5": builder("shufflenet_v2_x0_5", num_classes=10),
        "mnasnet0_5": builder("mnasnet0_5", num_classes=10),
        "googlenet": builder("googlenet", num_classes=10, init_weights=True, aux_logits=False),
        "inception_v3": builder("inception_v3", num_classes=10, init_weights=True, aux_logits=False),
        "alexnet": builder("alexnet", num_classes=10),
        "vgg11_bn": builder("vgg11_bn", num_classes=10),
        "fasterrcnn_mobilenet_v3_large_fpn": partial(
            detection.fasterrcnn_mobilenet_v3_large_fpn, weights=None, weights_backbone=None, num_classes=10,
        ),
        "retinanet_resnet50_fpn": partial(
            detection.retinanet_resnet50_fpn, weights=None, weights_backbone=None, num_classes=10,
        ),
        "ssdlite320_mobilenet_v3_large": partial(
            detection.ssdlite320_mobilenet_v3_large, weights=None, weights_backbone=None, num_classes=10,
        ),
        "deeplabv3_mobilenet_v3_large": partial(
            segmentation.deeplabv3_mobilenet_v3_large, weights=None, weights_backbone=None, num_classes=10,
        ),
        "lraspp_mobilenet_v3_large": partial(
            segmentation.lraspp_mobilenet_v3_large, weights=None, weights_backbone=None, num_classes=10,
        ),
        "r3d_18": partial(video.r3d_18, weights=None, num_classes=10),
        "s3d": partial(video.s3d, weights=None, num_classes=10),
        "mvit_v2_s": partial(video.mvit_v2_s, weights=None, num_classes=10),
        "swin3d_t": partial(video.swin3d_t, weights=None, num_classes=10),
        "raft_small": partial(optical_flow.raft_small, weights=None),
    }

# The subset the test suite checks (docs/ZOO.md): the architectures issue 15 names, and the
# torchvision models that build in well under a second; the shard check stays in the tool.
TIMM_CI: tuple[str, ...] = (
    "vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "swin_tiny_patch4_window7_224", "convnext_atto",
    "resnet18", "efficientnet_b0", "mobilenetv3_small_050", "regnetx_002", "eva02_tiny_patch14_224",
    "beit_base_patch16_224", "levit_128s", "mixer_s16_224", "maxvit_pico_rw_256", "fastvit_t8", "eca_nfnet_l0",
)
TORCHVISION_CI: tuple[str, ...] = (
    "VisionTransformer (vit_b_16 family, tiny)", "ConvNeXt (convnext_tiny family, tiny)",
    "SwinTransformer (swin_t family, tiny)", "mobilenet_v3_small", "efficientnet_b0", "mnasnet0_5",
    "shufflenet_v2_x0_5", "squeezenet1_1", "lraspp_mobilenet_v3_large", "raft_small",
    "ssdlite320_mobilenet_v3_large",  # runs its backbone on a dummy image for the channel counts
)
