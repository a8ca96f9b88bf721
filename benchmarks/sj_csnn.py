"""spikegrad's spikingjelly nodes in spikingjelly's own example network, on real Fashion-MNIST.

The network is the CSNN of spikingjelly's ``examples/conv_fashion_mnist.py`` (the builder's
``csnn`` preset: conv-BN-node-maxpool twice, then two linear layers, every layer followed by the
node; multi-step mode; the static image repeated T times; output = mean firing over T; MSE to
the one-hot label; Adam). Each node is default-constructed, as a user swapping it in would,
and compared with the host's own ``IFNode`` (what the example uses) for the same budget, seed,
batches and initial weights. The example's 128 channels are too slow for a 2-core CPU, so the
default here is 32 (``--channels`` changes it).

Usage::

    python benchmarks/sj_csnn.py                      # 300 steps per node, T=4, 32 channels
    python benchmarks/sj_csnn.py --steps 50 --nodes IFNode ResetTermLIFNode
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets import DatasetNotFound, fashion_mnist_tensors  # noqa: E402
from spikingjelly.activation_based import neuron, surrogate  # noqa: E402
from suite.recipes import set_warm_up  # noqa: E402

from spikegrad import neurons  # noqa: E402
from spikegrad.adapters import network  # noqa: E402
from spikegrad.adapters.spikingjelly import SPIKINGJELLY_VERSION  # noqa: E402

NODES = {
    "IFNode": lambda: neuron.IFNode(surrogate_function=surrogate.ATan()),  # the example's
    "ResetTermLIFNode": neurons.ResetTermLIFNode,
    "NALIFNode": neurons.NALIFNode,
    "HTDGLIFNode": neurons.HTDGLIFNode,
    "MultiStrengthIFNode": neurons.MultiStrengthIFNode,
}


def spec(channels: int) -> str:
    return f"{channels}C3p1-BN-P2-{channels}C3p1-BN-P2-{channels * 16}-10"


def run(name: str, data, args: argparse.Namespace) -> dict[str, object]:
    (x_train, y_train), (x_test, y_test) = data
    torch.manual_seed(args.seed)
    net = network.build_network(spec(args.channels), host="spikingjelly", neuron=NODES[name],
                                in_shape=(1, 28, 28))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(args.seed))
    net.train()
    start = time.perf_counter()
    for step in range(args.steps):
        set_warm_up(net, step < args.warm_up_steps)  # BPSA/BPTA's warm-up: nodes start as ReLU
        idx = order[(step * args.batch_size) % len(order):][: args.batch_size]
        x_seq = x_train[idx].unsqueeze(0).expand(args.T, -1, -1, -1, -1)
        net.reset()
        rate = net(x_seq).mean(0)
        loss = F.mse_loss(rate, F.one_hot(y_train[idx], 10).to(rate.dtype))
        if not torch.isfinite(loss):
            return {"node": name, "error": f"non-finite loss at step {step}"}
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - start
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x_test), 500):
            net.reset()
            x_seq = x_test[i : i + 500].unsqueeze(0).expand(args.T, -1, -1, -1, -1)
            correct += int((net(x_seq).mean(0).argmax(1) == y_test[i : i + 500]).sum())
    return {"node": name, "loss": loss.item(), "acc": 100.0 * correct / len(x_test),
            "ms_per_step": 1000 * train_s / args.steps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", nargs="+", default=list(NODES), choices=list(NODES))
    p.add_argument("--steps", type=int, default=300, help="Adam steps per node")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--channels", type=int, default=32, help="the example uses 128")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warm-up-steps", type=int, default=0,
                   help="steps during which HTDGLIF nodes output relu(x) (the paper's warm-up)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    if min(args.steps, args.batch_size, args.T, args.channels) < 1:
        p.error("--steps, --batch-size, --T and --channels must be >= 1")
    torch.set_num_threads(args.threads)
    try:
        *data, source = fashion_mnist_tensors(args.data_dir)
    except DatasetNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = tuple((x.unsqueeze(1), y) for x, y in data)  # [N, 1, 28, 28] for the convolutions
    rows = [run(name, data, args) for name in args.nodes]
    print(f"\nCSNN {spec(args.channels)} (spikingjelly {SPIKINGJELLY_VERSION}), Fashion-MNIST "
          f"from {source}, T={args.T}, {args.steps} Adam steps (lr {args.lr}) of batch "
          f"{args.batch_size}, seed {args.seed}, {args.warm_up_steps} warm-up steps, "
          f"{args.threads} threads on "
          f"{platform.machine()}; test accuracy on all 10 000 test images")
    print("| node (default-constructed) | final train loss | test acc % | ms/step |")
    print("|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['node']} | failed: {r['error']} | | |")
        else:
            print(f"| {r['node']} | {r['loss']:.4f} | {r['acc']:.2f} | {r['ms_per_step']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
