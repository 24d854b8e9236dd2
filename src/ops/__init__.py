"""Kernels the models run on: fused CPU kernels (cpu_kernels.py, compiled from csrc/ on first use) and the
convolution cell they serve (conv.py). `use_fused_cpu_kernels(False)` switches them off for this process
(export, where graphs must hold plain MindSpore operators; tests of the fallback)."""
