"""Model weights from files: this repository's MindSpore checkpoints and published checkpoints (PyTorch
.pth / .pt / .bin, BiT's .npz, DALL-E's encoder.pkl), read without running code and fitted to a network."""
