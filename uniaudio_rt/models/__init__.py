from .config import WhisperVQConfig, glm4voice_tokenizer_config, public_uniaudio_token_config
from .encoder import EncoderOutput, WhisperVQEncoder
from .quantizer import vector_quantize_ref
from .whisper_decoder import WhisperDecoderConfig, WhisperTextDecoder
from .whisper_text import WhisperTextTokenizer

__all__ = ["WhisperVQConfig", "WhisperVQEncoder", "EncoderOutput", "vector_quantize_ref",
           "public_uniaudio_token_config", "glm4voice_tokenizer_config", "WhisperDecoderConfig",
           "WhisperTextDecoder", "WhisperTextTokenizer"]
