"""Online recognition: a live keypoint stream in, actions out (``fastskel stream``).

- :class:`ActionStream` — sliding windows over pushed frames, missing-frame / body / timestamp rules.
- :class:`StreamMeta`, :func:`meta_from_checkpoint`, :func:`preprocess_window` — the model's input
  description and its evaluation preprocessing, read from the checkpoint.
- :class:`TorchStreamModel`, :func:`load_stream_model` — PyTorch (or ONNX, ``*.onnx``) models.
"""
from .action_stream import MISSING_RULES, ActionStream, Prediction
from .meta import StreamMeta, meta_from_checkpoint, preprocess_window
from .model import StreamModel, TorchStreamModel, load_stream_model

__all__ = ["ActionStream", "Prediction", "MISSING_RULES", "StreamMeta", "meta_from_checkpoint",
           "preprocess_window", "StreamModel", "TorchStreamModel", "load_stream_model"]
