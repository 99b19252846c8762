# ruff: noqa: E741  (I and O are the input and output sizes of the method's notation)
"""Speed of the multi-variant rollout against the reference loop and the peers a user would pick.

One run, float32, side by side: the reference loop, torch.nn.RNN once per variant, a
torch.compile'd step loop (if it compiles), JAX vmap(lax.scan) (if jax is installed: the
``[bench]`` extra), and ours (the fused CPU kernel; the Triton kernel on a CUDA device, timed
with CUDA events). Every output is checked against the reference before anything is timed.
Reports medians, GFLOP/s of the recurrence (2 V B L H^2), the ratio to the best peer and the
fraction of this machine's float32 GEMM rate, measured in the same run with a large torch.mm.

    python benchmarks/bench_rollout.py [--sizes tiny S1 S2 S3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import torch

import schurfast
from schurfast.rollout import rollout

SIZES = {
    "tiny": (8, 64, 25, 64),
    "S1": (64, 64, 50, 128),
    "S2": (256, 64, 100, 64),
    "S3": (16, 256, 200, 256),
}
I, O = 4, 4


def median_seconds(fn, repeats, sync=lambda: None, warmup=True):
    if warmup:
        fn()
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
        # long runs: three samples are enough for a median
        if len(times) >= 3 and sum(times) > 10:
            break
    return statistics.median(times)


def cuda_event_seconds(fn, repeats):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def gemm_gflops(n=2048, repeats=7):
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_seconds(lambda: torch.mm(a, b), repeats) / 1e9


def make_inputs(V, B, L, H, device="cpu"):
    g = torch.Generator().manual_seed(0)
    W_hh = torch.randn(V, H, H, generator=g) * (0.9 / H**0.5)
    W_xh = torch.randn(H, I, generator=g) / I**0.5
    W_hy = torch.randn(O, H, generator=g) / H**0.5
    x = torch.randn(B, L, I, generator=g)
    return [t.to(device) for t in (W_hh, W_xh, W_hy, x)]


def torch_rnn_per_variant(W_hh, W_xh, W_hy, x):
    V, H = W_hh.shape[0], W_hh.shape[1]
    rnn = torch.nn.RNN(I, H, batch_first=True, bias=False)
    readout = torch.nn.Linear(H, O, bias=False)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(W_xh)
        readout.weight.copy_(W_hy)
        ys = []
        for v in range(V):
            rnn.weight_hh_l0.copy_(W_hh[v])
            ys.append(readout(rnn(x)[0]))
    return torch.stack(ys)


def compiled_step_loop():
    @torch.compile(dynamic=False)
    def step(h, W_hh_T, u_t, W_hy_T):
        h = torch.tanh(torch.baddbmm(u_t, h, W_hh_T))
        return h, h @ W_hy_T

    def run(W_hh, W_xh, W_hy, x):
        V, B, L, H = W_hh.shape[0], x.shape[0], x.shape[1], W_hh.shape[1]
        u = (x @ W_xh.T).expand(V, B, L, H)
        h = x.new_zeros(V, B, H)
        W_hh_T, W_hy_T = W_hh.transpose(1, 2).contiguous(), W_hy.T.contiguous()
        ys = []
        for t in range(L):
            h, y = step(h, W_hh_T, u[:, :, t], W_hy_T)
            ys.append(y)
        return torch.stack(ys, dim=2)

    return run


def jax_vmap_scan():
    import jax
    import jax.numpy as jnp

    def one(W_hh, W_xh, W_hy, x):
        def step(h, x_t):
            h = jnp.tanh(h @ W_hh.T + x_t @ W_xh.T)
            return h, h @ W_hy.T

        h0 = jnp.zeros((x.shape[0], W_hh.shape[0]), x.dtype)
        _, ys = jax.lax.scan(step, h0, jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(ys, 0, 1)

    fn = jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))

    def run(W_hh, W_xh, W_hy, x):
        args = [jnp.asarray(t.numpy()) for t in (W_hh, W_xh, W_hy, x)]
        return fn(*args).block_until_ready()

    def to_torch(y):
        import numpy as np

        return torch.from_numpy(np.array(y))

    return run, to_torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    peak = gemm_gflops()
    print(f"# schurfast {schurfast.__version__}, torch {torch.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} cpus, load average {load:.2f}")  # fmt: skip
    print(f"# float32 GEMM peak (torch.mm 2048^3, median): {peak:.1f} GFLOP/s")

    peers = {
        "reference": lambda *a: rollout(*a, backend="reference"),
        "torch.nn.RNN per variant": torch_rnn_per_variant,
    }
    try:
        peers["torch.compile step loop"] = compiled_step_loop()
    except Exception as e:
        print(f"# torch.compile step loop unavailable: {type(e).__name__}: {e}")
    try:
        jax_run, jax_to_torch = jax_vmap_scan()
        peers["JAX vmap(lax.scan)"] = lambda *a: jax_to_torch(jax_run(*a))
    except ImportError:
        print("# JAX not installed (pip install -e '.[bench]'): skipped")

    for name in args.sizes:
        V, B, L, H = SIZES[name]
        flop = 2 * V * B * L * H * H
        inputs = make_inputs(V, B, L, H)
        y_ref = rollout(*inputs, backend="reference")
        scale = y_ref.abs().max().item()
        # other work on the machine moves the GEMM rate too: keep the best one seen so far
        peak = max(peak, gemm_gflops())
        print(f"\n## {name}: V={V} B={B} L={L} H={H} I={I} O={O}, {flop / 1e9:.2f} GFLOP, "
              f"GEMM peak so far {peak:.1f} GFLOP/s")  # fmt: skip
        print("| method | median s | GFLOP/s | vs reference | of GEMM peak |")
        print("|---|---:|---:|---:|---:|")

        results = {}
        for label, fn in [*peers.items(), ("ours (cpu)", lambda *a: rollout(*a, backend="cpu"))]:
            try:
                y = fn(*inputs)
            except Exception as e:
                print(f"| {label} | failed: {type(e).__name__}: {str(e)[:80]} | | | |")
                continue
            err = (y - y_ref).abs().max().item() / scale
            if err > 1e-4:
                print(f"| {label} | wrong result: relative error {err:.1e} | | | |")
                continue
            # the checked call above was the warm-up (compilation included)
            results[label] = median_seconds(
                lambda fn=fn, inputs=inputs: fn(*inputs), args.repeats, warmup=False
            )

        t_ref = results["reference"]
        for label, t in results.items():
            print(f"| {label} | {t:.4f} | {flop / t / 1e9:.1f} | {t_ref / t:.2f}x | "
                  f"{flop / t / 1e9 / peak:.0%} |")  # fmt: skip
        peer_times = {k: v for k, v in results.items() if k not in ("reference", "ours (cpu)")}
        if peer_times and "ours (cpu)" in results:
            best = min(peer_times, key=peer_times.get)
            print(f"ours (cpu) vs best peer ({best}): "
                  f"{peer_times[best] / results['ours (cpu)']:.2f}x")  # fmt: skip

        if torch.cuda.is_available():
            gpu = make_inputs(V, B, L, H, device="cuda")
            y_gpu = rollout(*gpu, backend="triton")
            err = (y_gpu.cpu() - y_ref).abs().max().item() / scale
            if err > 1e-4:
                print(f"triton: wrong result, relative error {err:.1e}")
                continue
            t_tri = cuda_event_seconds(
                lambda gpu=gpu: rollout(*gpu, backend="triton"), args.repeats
            )
            t_gref = cuda_event_seconds(
                lambda gpu=gpu: rollout(*gpu, backend="reference"), args.repeats
            )
            print(f"triton on {torch.cuda.get_device_name()}: {t_tri:.5f} s, "
                  f"{flop / t_tri / 1e9:.1f} GFLOP/s, {t_gref / t_tri:.2f}x the reference "
                  f"loop on the same GPU")  # fmt: skip
        else:
            print("triton: not measured (no CUDA device)")


if __name__ == "__main__":
    # torch.compile's imports warn about deprecated torch.jit internals; not ours to fix
    warnings.simplefilter("ignore", DeprecationWarning)
    main()
