"""Parameter-efficient transfer learning (PETL) on timm vision transformers, inside their blocks.

Convpass (SLS' main method), RepAdapter, LoRA, AdaptFormer and linear probing. The PETL modules sit
inside the blocks, so ``forward_features``, ``forward_intermediates`` and ``model.blocks[:d]`` keep
working and the backbone's parameter names do not change. Every PETL parameter's name contains
``adapter`` or ``lora_``; the classification head is ``head.*``.

    >>> model = attach_petl(copy.deepcopy(backbone.model), PetlConfig("convpass", bottleneck=8))
    >>> set_drop_path(model, 0.1)
    >>> trainable_names(model)   # what an optimizer gets, once a head is added
"""

from slsviz.models.petl.adaptformer import AdaptFormerAdapter, AdaptFormerBlock
from slsviz.models.petl.attach import attach_petl, config_of, merge_petl, set_drop_path
from slsviz.models.petl.config import DEFAULT_SCALES, METHODS, PetlConfig
from slsviz.models.petl.convpass import ConvpassAdapter, ConvpassBlock, QuickGELU
from slsviz.models.petl.lora import LoraLinear
from slsviz.models.petl.params import (
    count_params,
    is_petl_param,
    mark_trainable,
    petl_state_dict,
    trainable_names,
)
from slsviz.models.petl.repadapter import RepAdapter, RepAdapterBlock
from slsviz.models.petl.swin_block import SwinAdaptFormerBlock, SwinConvpassBlock, SwinRepAdapterBlock

__all__ = [
    "DEFAULT_SCALES",
    "METHODS",
    "AdaptFormerAdapter",
    "AdaptFormerBlock",
    "ConvpassAdapter",
    "ConvpassBlock",
    "LoraLinear",
    "PetlConfig",
    "QuickGELU",
    "RepAdapter",
    "RepAdapterBlock",
    "SwinAdaptFormerBlock",
    "SwinConvpassBlock",
    "SwinRepAdapterBlock",
    "attach_petl",
    "config_of",
    "count_params",
    "is_petl_param",
    "mark_trainable",
    "merge_petl",
    "petl_state_dict",
    "set_drop_path",
    "trainable_names",
]
