"""Does oneDNN, capped at AVX2, round alike on every x86-64 CPU with AVX2? (issue 29, item 3.)

Hashes libtorch's CPU convolutions at the shapes fedsim runs, forward and both gradients, with
oneDNN (mkldnn) on and off, at 1 and 2 threads: `name hash backend` per line. Run it with the
reproducible mode's pins in the environment, as scripts/emulated-cpu-check.sh runs mkl-ops.py,
on this CPU and under `qemu-x86_64 -cpu Haswell-noTSX` or `-cpu EPYC-Rome-v2`; a row that
differs between CPUs is a shape oneDNN computes differently there (`--onednn-only` skips the
im2col rows). `--time` instead times each shape (forward + backward, median of 5) with oneDNN on and
off, to weigh what turning it on would save."""
import ctypes
import hashlib
import sys
import time

import torch

# (name, batch, in channels, out channels, kernel, stride, padding, side, groups)
SHAPES = [
    # ConvNet (k5 s2, no padding), one client and a stacked cohort of 8 (grouped).
    ("convnet-conv1", 32, 3, 6, 5, 2, 0, 32, 1),
    ("convnet-conv2", 32, 6, 16, 5, 2, 0, 14, 1),
    ("convnet-conv1-cohort8", 32, 24, 48, 5, 2, 0, 32, 8),
    ("convnet-conv2-cohort8", 32, 48, 128, 5, 2, 0, 14, 8),
    # ConvNet evaluation (batch 300) and KD (8 teachers x 32 synthetic images).
    ("convnet-conv1-eval", 300, 3, 6, 5, 2, 0, 32, 1),
    ("convnet-conv1-kd", 256, 3, 6, 5, 2, 0, 32, 1),
    # ResNet-18: stem, a stage-1 conv, a stride-2 conv and its 1x1 shortcut, a stage-4 conv.
    ("resnet-stem", 32, 3, 64, 3, 1, 1, 32, 1),
    ("resnet-64", 32, 64, 64, 3, 1, 1, 32, 1),
    ("resnet-128-s2", 32, 64, 128, 3, 2, 1, 32, 1),
    ("resnet-shortcut", 32, 64, 128, 1, 2, 0, 32, 1),
    ("resnet-512", 32, 512, 512, 3, 1, 1, 4, 1),
    # The generator at ngf 32 (synthetic batch 64): conv1 at 16x16, conv2 and conv3 at 32x32.
    ("gen32-conv1", 64, 64, 64, 3, 1, 1, 16, 1),
    ("gen32-conv2", 64, 64, 32, 3, 1, 1, 32, 1),
    ("gen32-conv3", 64, 32, 3, 3, 1, 1, 32, 1),
]


def digest(t):
    t = t.contiguous()  # no NumPy in fedsim's torch environment: read the bytes directly
    return hashlib.sha256(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())).hexdigest()[:12]


def inputs(batch, cin, cout, kernel, side, groups):
    g = torch.Generator().manual_seed(batch * 1000 + cin * 10 + cout)
    x = torch.randn(batch, cin, side, side, generator=g, requires_grad=True)
    w = (torch.randn(cout, cin // groups, kernel, kernel, generator=g) * 0.1).requires_grad_()
    b = torch.randn(cout, generator=g, requires_grad=True)
    return x, w, b


def step(x, w, b, stride, padding, groups):
    y = torch.nn.functional.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
    y.square().sum().backward()
    return y.detach()


def backend(x, w, b, stride, padding, groups):
    with torch.autograd.profiler.profile() as prof:
        torch.nn.functional.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
    names = {e.key for e in prof.key_averages()}
    return "onednn" if "aten::mkldnn_convolution" in names else "aten"


def hashes():
    for threads in (1, 2):
        torch.set_num_threads(threads)
        # --onednn-only: skip the im2col rows, which mkl-ops.py already shows agree everywhere.
        for mkldnn in (True,) if "--onednn-only" in sys.argv else (True, False):
            torch.backends.mkldnn.enabled = mkldnn
            for name, batch, cin, cout, kernel, stride, padding, side, groups in SHAPES:
                x, w, b = inputs(batch, cin, cout, kernel, side, groups)
                y = step(x, w, b, stride, padding, groups)
                used = backend(x, w, b, stride, padding, groups)
                tag = f"{name}-t{threads}-{'onednn' if mkldnn else 'im2col'}"
                for part, t in (("out", y), ("dx", x.grad), ("dw", w.grad), ("db", b.grad)):
                    print(f"{tag}-{part}", digest(t), used, flush=True)


def timings():
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    print(f"{'shape':24} {'oneDNN ms':>10} {'im2col ms':>10} {'ratio':>6}")
    for name, batch, cin, cout, kernel, stride, padding, side, groups in SHAPES:
        row = []
        for mkldnn in (True, False):
            torch.backends.mkldnn.enabled = mkldnn
            x, w, b = inputs(batch, cin, cout, kernel, side, groups)
            step(x, w, b, stride, padding, groups)
            runs = []
            for _ in range(5):
                start = time.perf_counter()
                step(x, w, b, stride, padding, groups)
                runs.append(time.perf_counter() - start)
            row.append(sorted(runs)[2] * 1000)
        print(f"{name:24} {row[0]:10.2f} {row[1]:10.2f} {row[1] / row[0]:6.2f}", flush=True)


if __name__ == "__main__":
    timings() if "--time" in sys.argv else hashes()
