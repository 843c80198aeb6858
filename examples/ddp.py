#!/usr/bin/env python3
"""Single-node data-parallel training from one shared copy of the dataset: every rank attaches it
by name, `DistributedSampler` gives each its share, and `shmpipe.Loader` makes the rank's
augmented batches in its own process (no DataLoader worker).

    shmpipe load photos/ --name train --resize 256 --labels folder
    torchrun --standalone --nproc-per-node 2 examples/ddp.py train --epochs 2

Uses NCCL and the GPUs when there are any, else gloo on the CPU. Rank 0 prints, for each epoch,
how many images the ranks trained on together and how many distinct ones, and the mean loss.
"""
import argparse
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

import shmpipe


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="a dataset made by `shmpipe load DIR --name NAME`")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, ranks = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)

    train = shmpipe.Dataset(args.name)  # the one copy in shared memory, attached by name
    sampler = DistributedSampler(train, shuffle=True, seed=0)  # this rank's share
    aug = shmpipe.RandomResizedCrop(args.size, mean=(0.485, 0.456, 0.406),
                                    std=(0.229, 0.224, 0.225))
    # The rank's share of the cores for its threads; pinned batches when there is a GPU.
    threads = max(1, len(os.sched_getaffinity(0)) // ranks)
    batches = shmpipe.Loader(train, aug, batch_size=args.batch, sampler=sampler,
                             threads=threads, pin_memory=cuda, drop_last=False)
    classes = max(1, len(train.classes or []))
    model = DistributedDataParallel(torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, classes)).to(device))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)

    for epoch in range(args.epochs):
        batches.set_epoch(epoch)  # a new order (the sampler's), new crops and flips
        seen = torch.zeros(len(train), dtype=torch.int64)
        seen[list(sampler)] += 1  # the share this epoch's batches are made of
        loss_sum, count = torch.zeros(1), torch.zeros(1)
        for images, labels in batches:  # tensors: (B, 3, size, size) float32, (B,) int64
            images = images.to(device, non_blocking=True)
            labels = labels.clamp(min=0).to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            loss_sum += loss.item() * len(images)
            count += len(images)
        for total in (seen, loss_sum, count):
            dist.all_reduce(total)
        if rank == 0:
            print(f"epoch {epoch}: {ranks} ranks, {int(count)} images, "
                  f"{int((seen > 0).sum())} of {len(train)} distinct, "
                  f"loss {float(loss_sum / count):.4f}", flush=True)
    # Every rank at the barrier before any tears the group down: torch's gloo backend aborts a
    # rank ("terminate called without an active exception") in about half the runs here when
    # its peer destroys the group first.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
