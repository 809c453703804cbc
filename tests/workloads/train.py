"""A small MLP's training step on PyTorch's CPU build (MKL's sgemm kernels: no unwind
information) in a loop for SECONDS (default 4), after `import torch` (seconds of it).

    python train.py [SECONDS]
"""
import sys
import time

import torch


def make_model():
    return torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                               torch.nn.ReLU(), torch.nn.Linear(1024, 10))


def train_step(model, optimizer, x, y):
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def main():
    torch.manual_seed(0)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(256, 512), torch.randint(0, 10, (256,))
    end = time.monotonic() + float(sys.argv[1] if len(sys.argv) > 1 else 4)
    while time.monotonic() < end:
        train_step(model, optimizer, x, y)
    print("train.py: finished")  # its end, for a profiler that does not pass exit statuses on


main()
