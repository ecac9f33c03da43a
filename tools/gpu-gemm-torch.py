#!/usr/bin/env python3
"""The reference for benches/cuda/gemm.rs's verify-sized sweep: PyTorch's bf16 `linear`
(cuBLASLt with its heuristics, bf16 out) at the same Llama-3-8B / Llama-3.2-1B projection
shapes and row counts, median of 20 timed batches, on the GPU machine. Prints one line a case:

    python3 tools/gpu-gemm-torch.py
"""
import torch

SHAPES = [(4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096), (4096, 128256), (2048, 3072), (2048, 16384), (8192, 2048)]
ROWS = [16, 32, 64, 96, 128, 192, 256, 384, 640]


def median_us(f, reps=20, inner=10):
    for _ in range(3):
        f()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(inner):
            f()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / inner)
    return sorted(times)[len(times) // 2]


name = torch.cuda.get_device_name(0)
for din, dout in SHAPES:
    w = torch.randn(dout, din, device="cuda", dtype=torch.bfloat16)
    for t in ROWS:
        x = torch.randn(t, din, device="cuda", dtype=torch.bfloat16)
        us = median_us(lambda: torch.nn.functional.linear(x, w))
        print(f"{name} torch-linear T={t:<4} {din:>5}->{dout:<6} {us:>9.2} us")
