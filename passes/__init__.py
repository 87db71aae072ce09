"""Relax and TIR module passes of tvm-weightvirt, one per file."""

from .add_page_gather import AddPageGather
from .conv_weights_output_channels_last import ConvWeightsOutputChannelsLast
from .exclusive_page_loader import ExclusivePageLoader
from .lift_weight_constants import LiftWeightConstants
from .lift_weight_transforms import LiftWeightTransforms
from .merge_tasks import MergeTasks
from .normalize_take_indices import NormalizeTakeIndices
from .read_weights_through_pages import ReadWeightsThroughPages
from .virtualize_weights import VirtualizeWeights
from .weights_in_kernel_layout import WeightsInKernelLayout

__all__ = [
    "AddPageGather",
    "ConvWeightsOutputChannelsLast",
    "ExclusivePageLoader",
    "LiftWeightConstants",
    "LiftWeightTransforms",
    "MergeTasks",
    "NormalizeTakeIndices",
    "ReadWeightsThroughPages",
    "VirtualizeWeights",
    "WeightsInKernelLayout",
]
