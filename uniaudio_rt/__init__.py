"""uniaudio-rt: runtime and training-parity toolkit for the UniAudio-Token audio tokenizer."""

from .models import WhisperVQConfig, WhisperVQEncoder

__version__ = "0.1.0"
__all__ = ["WhisperVQConfig", "WhisperVQEncoder", "__version__"]
