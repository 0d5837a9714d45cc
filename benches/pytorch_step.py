"""One SGD step of the paper's objective (3.3) in idiomatic PyTorch (CPU), for comparison
with `cargo bench --bench sgd` (benches/README.md, "SGD, explicit engine").

The batch is drawn with torch.randn (noise patches), the feature patches and the two views
with masks; forward (cubic encoder, head, batch normalization (3.1), loss (3.3) with
stop-gradient), autograd backward, and the update. Throughput is reported in
patch-coordinates per second, N * P * d per step, like the Rust benchmark.

Usage: python3 benches/pytorch_step.py [--dim 1024] [--batch 256] [--threads 1 2]
"""

import argparse
import time

import torch


def step(w, e, offdiag_mask, n, p, p0, d, alpha, lr, lr_head):
    # Data (Definition 3.1): noise patches ~ N(0, Pi), feature patches eps * alpha_l * e_l.
    x = torch.randn(n, p, d, dtype=torch.float64)
    x[:, :, :2] = 0.0
    label = torch.randint(0, 2, (n,))
    sign = torch.randint(0, 2, (n,), dtype=torch.float64) * 2 - 1
    feat = torch.rand(n, p).argsort(dim=1)[:, :p0]  # feature set S
    x.scatter_(1, feat[:, :, None].expand(-1, -1, d), 0.0)
    val = sign * torch.tensor(alpha, dtype=torch.float64)[label]
    rows = torch.arange(n)[:, None].expand(-1, p0)
    x[rows, feat, label[:, None].expand(-1, p0)] = val[:, None].expand(-1, p0)
    # Augmentation (3.2): A = a random half of the patches.
    a = torch.zeros(n, p, dtype=torch.bool)
    a.scatter_(1, torch.rand(n, p).argsort(dim=1)[:, : p // 2], True)
    x1 = x * a[:, :, None]
    x2 = x * (~a)[:, :, None]

    w.grad = None
    e.grad = None
    f1 = (torch.einsum("npd,md->npm", x1, w) ** 3).sum(1)
    with torch.no_grad():
        f2 = (torch.einsum("npd,md->npm", x2, w) ** 3).sum(1)
    big_f = f1 @ e.T

    def bn(z):
        mu = z.mean(0)
        return (z - mu) / torch.sqrt((z * z).mean(0) - mu * mu)

    loss = ((bn(big_f) - bn(f2)) ** 2).sum(1).mean()
    loss.backward()
    with torch.no_grad():
        w -= lr * w.grad
        e -= lr_head * e.grad * offdiag_mask
    return loss.item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--patches", type=int, default=8)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    d, n, p, m = args.dim, args.batch, args.patches, 2
    torch.manual_seed(0)
    for threads in args.threads:
        torch.set_num_threads(threads)
        w = (torch.randn(m, d, dtype=torch.float64) / d**0.5).requires_grad_()
        e = torch.eye(m, dtype=torch.float64).requires_grad_()
        mask = 1.0 - torch.eye(m, dtype=torch.float64)
        for _ in range(3):  # warm-up
            step(w, e, mask, n, p, 2, d, [4.0, 1.0], 1e-3, 1e-4)
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            step(w, e, mask, n, p, 2, d, [4.0, 1.0], 1e-3, 1e-4)
            times.append(time.perf_counter() - t0)
        times.sort()
        med = times[len(times) // 2]
        coords = n * p * d
        print(
            f"torch {torch.__version__} threads={threads} d={d} N={n} P={p}: "
            f"median {med * 1e3:.2f} ms/step, {coords / med / 1e6:.1f} M coords/s"
        )


if __name__ == "__main__":
    main()
