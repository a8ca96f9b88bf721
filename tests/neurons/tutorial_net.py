"""The seed-002 snntorch tutorial network with a pluggable neuron (shared by the neuron tests)."""

import torch
from torch import nn


class TutorialNet(nn.Module):
    """snntorch tutorial 5 (seed 002), with the neuron class swapped."""

    def __init__(self, make_neuron, num_inputs=784, num_hidden=1000, num_outputs=10,
                 num_steps=8):
        super().__init__()
        self.num_steps = num_steps
        self.fc1 = nn.Linear(num_inputs, num_hidden)
        self.lif1 = make_neuron()
        self.fc2 = nn.Linear(num_hidden, num_outputs)
        self.lif2 = make_neuron()

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec, mem2_rec = [], []
        for _ in range(self.num_steps):
            cur1 = self.fc1(x)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)
