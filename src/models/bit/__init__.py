from src.models.bit.resnetv2 import ResNetV2, StdConv2d

__all__ = ["ResNetV2", "StdConv2d"]
