"""The networks: frozen ViT backbones, the WEFT branch and adapters, baselines, heads, segmentor.

Configs name these classes by their short paths, e.g. ``weft_lightning.models.WEFTBackbone``.
"""

from weft_lightning.models.backbone import FrozenViT
from weft_lightning.models.expert_branch import WaveletExpertExtractor
from weft_lightning.models.experts import ExpertMixture, WaveletExpert
from weft_lightning.models.heads.fpn import FPNHead
from weft_lightning.models.heads.mask2former import Mask2FormerHead
from weft_lightning.models.peft import (
    AdaptFormerBackbone,
    FrozenBackbone,
    FullFineTuning,
    LoRABackbone,
    PlainViTBackbone,
    ViTAdapterBackbone,
    VPTBackbone,
)
from weft_lightning.models.segmentor import Segmentor
from weft_lightning.models.weft import WEFTBackbone

__all__ = [
    "AdaptFormerBackbone",
    "ExpertMixture",
    "FPNHead",
    "FrozenBackbone",
    "FrozenViT",
    "FullFineTuning",
    "LoRABackbone",
    "Mask2FormerHead",
    "PlainViTBackbone",
    "Segmentor",
    "VPTBackbone",
    "ViTAdapterBackbone",
    "WEFTBackbone",
    "WaveletExpert",
    "WaveletExpertExtractor",
]
