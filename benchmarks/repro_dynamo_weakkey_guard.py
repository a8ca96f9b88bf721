"""Minimal torch-only reproducer of the cold-cache ``IndexError`` seen when a spikingjelly 2.x
network calls the host's ``functional.reset_net`` inside a ``torch.compile``'d function.

No spikingjelly and no spikegrad here: a module-level ``weakref.WeakKeyDictionary`` keyed by
networks (as spikingjelly 2.x's ``functional/net_config.py`` keeps its reset cache), looked up
inside the compiled ``forward``. Dynamo guards that lookup by the key's position in the dict
(a source like ``list(dict.keys(CACHE.data))[i]``). An earlier network that is unreachable but
still alive (a reference cycle) sits in the dict before the compiled network's own key while
dynamo traces; if the cycle collector frees it after tracing and before the guards are built,
that position no longer exists and guard building raises ``IndexError: list index out of
range`` (``torch/_guards.py`` ``get_value``).
A cold Inductor compile allocates enough for the collector to run at that moment, which is why
the failure showed on an empty cache and not on a warm one. The script makes the timing
deterministic by running ``gc.collect()`` at the start of ``CheckFunctionManager.__init__``
(where guards are built); ``--no-collect`` leaves the collector alone and passes.

    python benchmarks/repro_dynamo_weakkey_guard.py               # IndexError (exit 1)
    python benchmarks/repro_dynamo_weakkey_guard.py --no-collect  # passes (exit 0)

In spikegrad: ``neurons.reset_net(net)`` resets the modules directly while dynamo traces and
never reads that cache, so it is not affected (tests/test_compile_heldout.py holds both cases).
"""

from __future__ import annotations

import argparse
import gc
import sys
import weakref

import torch
import torch._dynamo.guards as guards
from torch import nn

CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def remember(net: nn.Module) -> None:
    if CACHE.get(net) is None:
        CACHE[net] = True


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.cycle = [self]  # freed only by the cycle collector, as a network with hooks often is

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        remember(self)
        return self.lin(x)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-collect", action="store_true",
                        help="do not run the cycle collector before guards are built")
    args = parser.parse_args()
    if not args.no_collect:
        build = guards.CheckFunctionManager.__init__

        def collect_then_build(self, *a, **k):
            gc.collect()
            return build(self, *a, **k)
        guards.CheckFunctionManager.__init__ = collect_then_build
    gc.disable()  # the collector runs only where the line above puts it
    earlier = Net()
    remember(earlier)
    model = Net()
    remember(model)  # an eager call first (the host's reset before the first compiled step)
    del earlier  # unreachable, still alive: its key stays in CACHE until the collector runs
    try:
        torch.compile(model, fullgraph=True, backend="eager")(torch.randn(2, 4))
    except IndexError as err:
        print(f"torch {torch.__version__}: IndexError while dynamo built guards: {err}")
        return 1
    print(f"torch {torch.__version__}: compiled without error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
