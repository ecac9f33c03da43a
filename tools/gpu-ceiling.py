"""The card's ceilings, measured in the same device call as the run they are quoted beside:
device-to-device copy (bytes read plus written per second) and bf16 GEMM 8192^3 through
PyTorch (present on the GPU machine, not a dependency of the product). Prints one line each;
medians of 20 timed repetitions after 3 warm-up ones."""
import statistics

import torch


def timed_ms(fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    name = torch.cuda.get_device_name(0)
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_ms = timed_ms(lambda: dst.copy_(src))
    print(f"ceiling {name}: device-to-device copy {2 * src.numel() / copy_ms / 1e6:.0f} GB/s (1 GiB, median)")
    n = 8192
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    gemm_ms = timed_ms(lambda: a @ b)
    print(f"ceiling {name}: bf16 GEMM {n}^3 {2 * n**3 / gemm_ms / 1e9:.0f} TFLOP/s (median)")


if __name__ == "__main__":
    main()
