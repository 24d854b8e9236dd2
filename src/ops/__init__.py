"""Kernels: the fused CPU kernels the models run on (cpu_kernels.py, compiled from csrc/ on first use), the
convolution cell they serve (conv.py), and the data pipeline's per-image kernels (image_kernels.py).
`use_fused_cpu_kernels(False)` switches them off for this process (export, where graphs must hold plain
MindSpore operators; tests of the fallback)."""
