#!/usr/bin/python3
"""FedAvg in plain PyTorch, for batchnorm_test: the reference fedpod must match.

    fedavg_reference.py script --out bn_net.pt [--seed 0]
        scripts BnNet (below) to a TorchScript archive fedpod pods can train.
    fedavg_reference.py train --model torchscript:bn_net.pt | mlp:init.pt --pods a.csv ...
        [--rounds 5 --epochs 1 --batch-size 32 --lr 0.05 --job-seed 0 ...] --out ref.json
        runs the federated schedule fedpod runs, on the same splits and batches, and
        writes {"test_accuracy", "test_samples"} to --out.
    fedavg_reference.py strict-load --model-pt model.pt --pods a.csv ... [--out eval.json]
        loads fedpod's model.pt into a fresh BnNet with load_state_dict(strict=True) and
        evaluates it on the pods' test splits.

What "the same" means, step by step as a fedpod pod does it (data/dataset.cpp,
worker/trainer.cpp, aggregation/fedavg.cpp):
  - each pod's rows: features in file order but the target, float32, times --scale;
    split by torch.randperm(n) from a generator seeded with --split-seed: the first
    n - floor(test*n) - floor(validation*n) rows train, then validation, then test;
  - a round: every pod starts from the global state (parameters and buffers), makes a
    fresh SGD optimizer, and for each local epoch draws torch.randperm(n_train) from a
    generator seeded with job_seed * 1000003 + round (one generator per round, the
    next permutation per epoch), in batches of --batch-size, calling training_step;
  - FedAvg: float tensors (parameters, running_mean, running_var) are the mean
    weighted by each pod's training rows; integer buffers (num_batches_tracked) the
    maximum;
  - the test: the final global state in eval mode on every pod's test split.
Run it with Debian's /usr/bin/python3 (python3-torch, the same PyTorch as fedpod's libtorch).
"""
import argparse
import csv
import json
import math
import sys
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F


class BnNet(torch.nn.Module):
    """Batch norm on the input and on the hidden layer: running statistics matter."""

    def __init__(self, features: int = 64, hidden: int = 32, classes: int = 10):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(features)
        self.fc1 = torch.nn.Linear(features, hidden)
        self.bn1 = torch.nn.BatchNorm1d(hidden)
        self.fc2 = torch.nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.flatten(1))
        return self.fc2(F.relu(self.bn1(self.fc1(x))))

    @torch.jit.export
    def training_step(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits = self.forward(x)
        return F.cross_entropy(logits, y), logits

    @torch.jit.export
    def validation_step(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits = self.forward(x)
        return F.cross_entropy(logits, y), logits

    @torch.jit.export
    def test_step(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits = self.forward(x)
        return F.cross_entropy(logits, y), logits


def mlp_bn(features: int, hidden: int, classes: int) -> torch.nn.Module:
    """fedpod's built-in mlp with batch_norm: true and one hidden layer (model/zoo.cpp)."""
    return torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.BatchNorm1d(hidden),
                               torch.nn.ReLU(), torch.nn.Linear(hidden, classes))


def read_pod(path: str, target: str, scale: float, split_seed: int, validation: float,
             test: float) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    t = header.index(target)
    feats = [i for i in range(len(header)) if i != t]
    x = torch.tensor([[float(r[i]) for i in feats] for r in body], dtype=torch.float64).to(torch.float32)
    if scale != 1.0:
        x.mul_(scale)
    y = torch.tensor([int(float(r[t])) for r in body], dtype=torch.int64)
    n = y.numel()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    n_test, n_val = math.floor(test * n), math.floor(validation * n)
    n_train = n - n_test - n_val

    def take(start: int, count: int):
        rows_ = perm[start:start + count]
        return x.index_select(0, rows_), y.index_select(0, rows_)

    return {"train": take(0, n_train), "validation": take(n_train, n_val), "test": take(n_train + n_val, n_test)}


def fedavg(states: List[Dict[str, torch.Tensor]], weights: List[float]) -> Dict[str, torch.Tensor]:
    out = {}
    total = float(sum(weights))
    for key, first in states[0].items():
        if first.is_floating_point():
            acc = first.to(torch.float32) * weights[0]
            for s, w in zip(states[1:], weights[1:]):
                acc.add_(s[key].to(torch.float32), alpha=w)
            out[key] = acc.div_(total)
        else:
            out[key] = torch.stack([s[key] for s in states]).max(0).values
    return out


def evaluate(model: torch.nn.Module, pods) -> Tuple[float, int]:
    model.eval()
    correct, samples = 0, 0
    with torch.no_grad():
        for pod in pods:
            x, y = pod["test"]
            correct += int(model(x).argmax(1).eq(y).sum())
            samples += y.numel()
    return correct / samples, samples


def train(args) -> Dict[str, float]:
    kind, _, path = args.model.partition(":")
    if kind == "torchscript":
        make = BnNet
        initial = {k: v.clone() for k, v in torch.jit.load(path).state_dict().items()}
    elif kind == "mlp":
        make = lambda: mlp_bn(64, args.hidden, 10)  # noqa: E731
        initial = torch.load(path)
    else:
        sys.exit(f"--model: torchscript:PATH or mlp:PATH, got {args.model!r}")
    pods = [read_pod(p, args.target, args.scale, args.split_seed, args.validation, args.test) for p in args.pods]
    model = make()
    model.load_state_dict(initial, strict=True)
    glob = {k: v.clone() for k, v in model.state_dict().items()}
    for rnd in range(1, args.rounds + 1):
        states, weights = [], []
        for pod in pods:
            local = make()
            local.load_state_dict(glob, strict=True)
            local.train()
            opt = torch.optim.SGD(local.parameters(), lr=args.lr)
            x, y = pod["train"]
            gen = torch.Generator().manual_seed(args.job_seed * 1000003 + rnd)
            for _ in range(args.epochs):
                order = torch.randperm(y.numel(), generator=gen)
                for start in range(0, y.numel(), args.batch_size):
                    rows = order[start:start + args.batch_size]
                    opt.zero_grad()
                    loss = F.cross_entropy(local(x.index_select(0, rows)), y.index_select(0, rows))
                    loss.backward()
                    opt.step()
            states.append({k: v.detach().clone() for k, v in local.state_dict().items()})
            weights.append(float(y.numel()))
        glob = fedavg(states, weights)
    model.load_state_dict(glob, strict=True)
    accuracy, samples = evaluate(model, pods)
    return {"test_accuracy": accuracy, "test_samples": samples}


def strict_load(args) -> Dict[str, float]:
    state = torch.load(args.model_pt)
    model = BnNet()
    model.load_state_dict(state, strict=True)  # raises on a missing or unexpected key
    pods = [read_pod(p, args.target, args.scale, args.split_seed, args.validation, args.test) for p in args.pods]
    accuracy, samples = evaluate(model, pods)
    dtypes = {k: str(v.dtype) for k, v in state.items()}
    return {"test_accuracy": accuracy, "test_samples": samples, "keys": sorted(state), "dtypes": dtypes}



def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("script")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    for name in ("train", "strict-load"):
        p = sub.add_parser(name)
        p.add_argument("--pods", nargs="+", required=True)
        p.add_argument("--target", default="label")
        p.add_argument("--scale", type=float, default=1.0)
        p.add_argument("--split-seed", type=int, default=0)
        p.add_argument("--validation", type=float, default=0.1)
        p.add_argument("--test", type=float, default=0.2)
        p.add_argument("--out", required=True)
    t = sub.choices["train"]
    t.add_argument("--model", required=True)
    t.add_argument("--hidden", type=int, default=32)
    t.add_argument("--rounds", type=int, default=5)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--job-seed", type=int, default=0)
    sub.choices["strict-load"].add_argument("--model-pt", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cmd == "script":
        torch.manual_seed(args.seed)
        torch.jit.save(torch.jit.script(BnNet()), args.out)
        return
    result = train(args) if args.cmd == "train" else strict_load(args)
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
