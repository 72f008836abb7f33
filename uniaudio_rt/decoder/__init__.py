"""Token-to-audio decoder (CosyVoice / GLM-4-Voice family): flow matching to mel, HiFT vocoder to wav."""

from .config import (CFMConfig, EncoderConfig, EstimatorConfig, F0PredictorConfig, FlowConfig, HiFTConfig,
                     LengthRegulatorConfig)
from .flow import FlowDecoder
from .hift import HiFTGenerator

__all__ = ["CFMConfig", "EncoderConfig", "EstimatorConfig", "F0PredictorConfig", "FlowConfig", "HiFTConfig",
           "LengthRegulatorConfig", "FlowDecoder", "HiFTGenerator"]
