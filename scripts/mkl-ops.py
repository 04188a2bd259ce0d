"""Hashes of libtorch's CPU operations that MKL computes (matrix products, im2col convolutions,
vector math), one line each: `name hash`. Run by scripts/emulated-cpu-check.sh on this CPU and
on emulated ones, with the reproducible mode's pins in the environment. Python's torch has
libtorch's own sqrt (MKL's), not fedsim's exact one, so its sqrt row shows what fedsim replaces."""
import hashlib

import torch

torch.set_num_threads(1)
torch.backends.mkldnn.enabled = False  # as in the reproducible mode
g = torch.Generator().manual_seed(0)


def digest(t):
    return hashlib.sha256(bytes(t.contiguous().view(torch.uint8).flatten().tolist())).hexdigest()[:12]


for m, k, n in [(32, 400, 120), (32, 120, 84), (7, 33, 5), (256, 1600, 64)]:
    a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    print(f"matmul-{m}x{k}x{n}", digest(a @ b))
    print(f"matmul-T-{m}x{k}x{n}", digest(a.t().contiguous().t() @ b))
x = torch.randn(32, 3, 32, 32, generator=g, requires_grad=True)
w = torch.randn(6, 3, 5, 5, generator=g, requires_grad=True)
y = torch.nn.functional.conv2d(x, w, stride=2)
y.square().sum().backward()
print("conv2d", digest(y.detach()))
print("conv2d-grad-in", digest(x.grad))
print("conv2d-grad-w", digest(w.grad))
n = 200000
wide = torch.randn(n, generator=g) * (10.0 ** torch.randint(-8, 3, (n,), generator=g).float())
positive = wide.abs() + 1e-30
unit = torch.rand(n, generator=g) * 2 - 1
for name, f, arg in [
    ("exp", torch.exp, wide.clamp(-80, 80)),
    ("log", torch.log, positive),
    ("tanh", torch.tanh, wide),
    ("erf", torch.erf, wide),
    ("sin", torch.sin, wide),
    ("cos", torch.cos, wide),
    ("softmax", lambda t: torch.softmax(t.view(-1, 10), 1), wide.clamp(-80, 80)),
    ("sqrt", torch.sqrt, positive),
    ("atan", torch.atan, wide),
    ("asin", torch.asin, unit),
]:
    print(name, digest(f(arg)))
