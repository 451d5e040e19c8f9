"""EnCodec-style neural audio codec: model, quantizer, discriminator, losses, loading.

Public API::

    Codec                                   protocol every codec implements
    CodecModel, CodecModelConfig            the native model and its config
    build_codec_model(config) -> CodecModel
    load_codec(path, bandwidth=None, device="cpu") -> Codec
    codec_fingerprint(codec) -> str         keys the token cache
    register_codec_loader(predicate, loader)
"""

from tunesmith.models.codec.loading import codec_fingerprint, load_codec, register_codec_loader
from tunesmith.models.codec.model import CodecModel, CodecModelConfig, CodecOutput, build_codec_model
from tunesmith.models.codec.protocol import Codec

__all__ = [
    "Codec",
    "CodecModel",
    "CodecModelConfig",
    "CodecOutput",
    "build_codec_model",
    "codec_fingerprint",
    "load_codec",
    "register_codec_loader",
]
