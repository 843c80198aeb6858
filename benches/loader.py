#!/usr/bin/env python3
"""Data-loader epochs over a kept dataset, three ways, under spawn and forkserver: memory (peak
total Pss of every process) and images/s. Run by hand, not a test.

    shmpipe gen /tmp/loader --count 7200 --size 224x224 --format jpeg    # 1.01 GiB decoded
    shmpipe load /tmp/loader --name loader
    pip install ./python pillow [torch]
    python3 benches/loader.py loader /tmp/loader [--workers 8] [--batch 64] [--rounds 3]
        [--epochs 2] [--persistent] [--loader auto|torch|pool]

(a) shmpipe: `shmpipe.Dataset(NAME)`, pickled by name into each worker; batches stacked in the
    worker and sent to the parent with their pixels, as the default collate does.
(a') collate: the same dataset with `collate_fn=shmpipe.collate`: a worker sends the block's name
    and the batch's indices, and the parent gathers the images from its own mapping.
(b) naive: a dataset object holding the decoded arrays in a list, pickled into each worker as a
    data loader does under spawn and forkserver (copied from the block, so decoding is not timed).
(c) pillow: each worker decodes its images from the files with Pillow.

The augmented case (`--ways aug-w0,aug-w8,aug-views,aug-pillow`; load the dataset with
`--resize 256`, each image's shorter side 256): RandomResizedCrop(224) + horizontal flip +
ToTensor + Normalize into float32 (64, 3, 224, 224) batches.
(aug-w0) shmpipe's compiled augmentation (`shmpipe.Loader`), in this process on its own threads:
    no worker process.
(aug-w0-recycle) the same with `recycle=2`: each batch written into the array of the batch two
    before, not a fresh one (the kernel zeroes a fresh array's pages).
(aug-w8) the same compiled `batch` in each of the workers (one thread each), batches of indices.
Each worker of these ways writes its batch into a file of /dev/shm and sends its name, as torch's
DataLoader sends a worker's tensors (in shared memory); the pool stands in for it without torch.
(aug-views) `shmpipe.Dataset` views with the transforms in Python, as torchvision runs them on a
    PIL image (the same steps: get_params, crop, bilinear resize, flip, to float, normalise).
(aug-pillow) ImageFolder's way: each worker decodes the JPEG file with Pillow, then the same
    transforms.
(aug-tv-imagefolder) torchvision itself, when installed: `ImageFolder` over the JPEG files with
    `Compose([RandomResizedCrop(224), RandomHorizontalFlip(), ToTensor(), Normalize()])`, in a
    DataLoader's workers (default collate).
(aug-tv-views) `shmpipe.Dataset` views with those torchvision transforms (on a PIL image made from
    each view).

With torch installed it runs `torch.utils.data.DataLoader(ds, batch_size, shuffle=True,
num_workers, multiprocessing_context=CTX)`; without (or with --loader pool), a `multiprocessing`
pool of the same start method does the same work: the dataset object is pickled once into each
worker (its initializer), workers fetch shuffled batches of indices and return the stacked
batch, with at most 2 batches per worker in flight (DataLoader's default prefetch). Under
forkserver the server preloads this script's imports (see `context`). Each run has --epochs
epochs, timed from the loader's start (worker start-up included) to its last batch: each with
workers of its own, as DataLoader does by default, or with --persistent the first epoch's
workers for all (`persistent_workers=True`). The first epoch also pays for the fork server's
start; the later ones are what each further epoch of a training costs. Each (start method, way)
runs in a fresh process of its own, so that no way inherits another's heap. With --rounds N
every way runs N times, the ways taking turns, and the table gives medians.

Each way runs twice per round: once timed, once with the memory sampler (on 2 cores the sampler
would take CPU from the job it times). Memory: /proc/PID/smaps_rollup of this process and every
descendant, sampled every 50 ms and once more at each epoch's last batch (each sample reads 1 GiB
mappings: it takes a while); the sum of Pss counts a page shared by N processes 1/N in each, so
the total is the memory the job holds. The block's pages are counted as far as some process maps
them; its size is printed too. The baseline is the Pss of one idle worker, started the same way
(so with this script's imports: NumPy, and torch when installed).
"""
import argparse
import itertools
import json
import mmap
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

import shmpipe

try:
    import PIL.Image  # noqa: F401  (imported here so that the fork server preloads it)
except ImportError:
    pass

try:
    import torch
    from torch.utils.data import DataLoader
except ImportError:
    torch = None

try:
    import torchvision
    import torchvision.transforms as T
except ImportError:
    torchvision = None


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


class PssSampler:
    """Peak of the summed Pss of this process and its descendants, every 50 ms."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self):
        total = sum(pss_kib(p) for p in descendants(os.getpid()))
        self.peak = max(self.peak, total)

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class NaiveDataset:
    """The usual way: the decoded images in a list, inside the dataset object."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


class PillowDataset:
    """Decodes each image from its file when asked for."""

    def __init__(self, root, paths, labels):
        self.root, self.paths, self.labels = root, paths, labels

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(os.path.join(self.root, self.paths[i])) as im:
            return np.asarray(im.convert("RGB")), self.labels[i]


MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _crop_params(height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params, on Python's `random`."""
    import math

    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    return 0, 0, height, width


def torchvision_like(image, size=224):
    """RandomResizedCrop(size) (bilinear), RandomHorizontalFlip(), ToTensor(), Normalize() on a
    PIL image, as torchvision computes them: a float32 (3, size, size) array."""
    from PIL import Image

    i, j, h, w = _crop_params(image.height, image.width)
    image = image.crop((j, i, j + w, i + h)).resize((size, size), Image.BILINEAR)
    if random.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    array = np.asarray(image, np.float32) / np.float32(255)
    return ((array - MEAN) / STD).transpose(2, 0, 1)


def view_transform(view):
    """The torchvision transforms on a dataset's view (a PIL image made from it)."""
    from PIL import Image

    return torchvision_like(Image.fromarray(view))


class PillowAugDataset(PillowDataset):
    """ImageFolder with the transforms: decode the file with Pillow, then transform."""

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(os.path.join(self.root, self.paths[i])) as im:
            return torchvision_like(im.convert("RGB")), self.labels[i]


def torchvision_transforms(from_view=False):
    """torchvision's own RandomResizedCrop(224), RandomHorizontalFlip(), ToTensor() and
    Normalize(), on a PIL image (made from a dataset's view first, when `from_view`)."""
    from PIL import Image

    steps = [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
             T.Normalize(MEAN.tolist(), STD.tolist())]
    return T.Compose(([Image.fromarray] if from_view else []) + steps)


def image_folder(folder):
    """torchvision's ImageFolder over the JPEG files, with its transforms: the folder as the
    one class of a root made for it (ImageFolder wants class folders)."""
    import tempfile

    root = tempfile.mkdtemp(prefix="loaderbench-")
    os.symlink(os.path.abspath(folder), os.path.join(root, "all"))
    return torchvision.datasets.ImageFolder(root, transform=torchvision_transforms())


class SharedBatch:
    """A batch a worker made in a file of /dev/shm, sent as its name: how torch's DataLoader
    moves a worker's tensors (in shared memory, a handle through the pipe), which the pool
    stands in for. The receiver maps it and removes the name; the pages go with the last view."""

    _count = itertools.count()

    def __init__(self, shape, dtype):
        self.name = f"/dev/shm/loaderbench-{os.getpid()}-{next(self._count)}"
        self.shape, self.dtype = tuple(shape), np.dtype(dtype).str
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        fd = os.open(self.name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, nbytes)
            self.array = np.frombuffer(mmap.mmap(fd, nbytes), self.dtype).reshape(self.shape)
        finally:
            os.close(fd)

    def __getstate__(self):
        return {"name": self.name, "shape": self.shape, "dtype": self.dtype}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.array = None

    def open(self):
        fd = os.open(self.name, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            array = np.frombuffer(mmap.mmap(fd, size), self.dtype).reshape(self.shape)
        finally:
            os.close(fd)
            os.unlink(self.name)
        return array


def shared_stack(items):
    """The default collate for float batches, into shared memory as torch's workers do."""
    first = items[0][0]
    batch = SharedBatch((len(items), *first.shape), first.dtype)
    np.stack([im for im, _ in items], out=batch.array)
    return batch, np.array([label for _, label in items])


class IndexDataset:
    """Items that are their own index: the compiled batch is made in the collate."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i, 0


def augmentation():
    return shmpipe.RandomResizedCrop(224, flip=0.5, mean=MEAN.tolist(), std=STD.tolist(),
                                     seed=random.getrandbits(32))


class CompiledCollate:
    """A worker's collate: the batch made by the compiled augmentation, one thread."""

    def __init__(self, name):
        self.name, self.dataset, self.augment = name, None, None

    def __getstate__(self):
        return {"name": self.name}

    def __setstate__(self, state):
        self.name, self.dataset, self.augment = state["name"], None, None

    def __call__(self, items):
        if self.dataset is None:
            self.dataset, self.augment = shmpipe.Dataset(self.name), augmentation()
        self.augment.set_epoch(self.augment.epoch + 1)  # a new draw for every batch it makes
        indices = [i for i, _ in items]
        batch = SharedBatch((len(items), 3, 224, 224), np.float32)
        self.augment.batch(self.dataset, indices, threads=1, out=batch.array)
        return batch, np.zeros(len(items), np.int64)


def compiled_epochs(name, count, sampled, recycle=0):
    """`count` epochs of `shmpipe.Loader` in this process: figures as `epochs` gives them."""
    dataset = shmpipe.Dataset(name)
    loader = shmpipe.Loader(dataset, augmentation(), batch_size=64, seed=random.getrandbits(32),
                            recycle=recycle)
    figures = []
    with PssSampler() if sampled else NoSampler() as sampler:
        for epoch in range(count):
            loader.set_epoch(epoch)
            seen, first, start = 0, None, time.perf_counter()
            for images, _labels in loader:
                seen += len(images)
                first = first or time.perf_counter()
            sampler.sample()
            figures.append((seen, time.perf_counter() - start, first - start))
    return figures, sampler.peak


_dataset = None
_collate = None


def stack(items):
    """What a data loader's default collate does with NumPy items (without making tensors)."""
    return np.stack([im for im, _ in items]), np.array([label for _, label in items])


def _init(dataset, collate):
    global _dataset, _collate
    _dataset, _collate = dataset, collate


def _batch(indices):
    return _collate([_dataset[i] for i in indices])


def _idle():
    return None


class NoSampler:
    """Stands in for `PssSampler` in a timed run."""

    peak = 0

    def sample(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def context(method):
    """The start method's context. Forkserver's server first imports this script's modules, as a
    training script should ask: Python's forkserver means to preload the main module, but up to
    3.13 it never does (`ForkServer.ensure_running` asks `spawn.get_preparation_data` for a
    `main_path` key that it names `init_main_from_path`), so without this every worker imports
    NumPy (and torch) again on its own."""
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload([m for m in PRELOAD if m in sys.modules])
    return ctx


# What a worker of this script uses, imported once by the fork server (those imported here).
PRELOAD = ["numpy", "shmpipe", "PIL.Image", "torch", "torch.utils.data"]


def epochs(dataset, collate, method, workers, batch, sampled, count, persistent):
    """`count` shuffled epochs: [(images seen, seconds, seconds to the first batch)] per epoch,
    and the peak total Pss (KiB; 0 unless `sampled`) over all of them. Each epoch starts workers
    of its own, as a data loader does by default, unless `persistent` (DataLoader's
    `persistent_workers=True`: the first epoch's workers serve them all)."""
    figures = []
    ctx = context(method)
    loader = pool = None
    with PssSampler() if sampled else NoSampler() as sampler:
        try:
            for _ in range(count):
                seen, first, finished = 0, None, None
                start = time.perf_counter()

                def arrived(images):
                    nonlocal seen, first, finished
                    if isinstance(images, SharedBatch):
                        images = images.open()
                    seen += len(images)
                    first = first or time.perf_counter()
                    if seen == len(dataset):
                        finished = time.perf_counter()
                        sampler.sample()  # the last batch: every worker still alive, its pages mapped

                if torch is not None:
                    if loader is None or not persistent:
                        loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                            multiprocessing_context=ctx, persistent_workers=persistent,
                                            collate_fn=None if collate in (stack, shared_stack) else collate)
                    for images, _labels in loader:
                        arrived(images)
                else:
                    if pool is None:
                        pool = ctx.Pool(workers, initializer=_init, initargs=(dataset, collate))
                    order = list(range(len(dataset)))
                    random.shuffle(order)
                    batches = [order[i : i + batch] for i in range(0, len(order), batch)]
                    pending = [pool.apply_async(_batch, (b,)) for b in batches[: 2 * workers]]
                    for following in batches[2 * workers :] + [None] * len(pending):
                        images, _labels = pending.pop(0).get()
                        arrived(images)
                        if following is not None:
                            pending.append(pool.apply_async(_batch, (following,)))
                    if not persistent:
                        pool.terminate()
                        pool.join()
                        pool = None
                seconds = (finished or time.perf_counter()) - start
                figures.append((seen, seconds, (first or start) - start))
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            del loader
    return figures, sampler.peak


def idle_baseline(method):
    """Pss (KiB) of one idle interpreter with NumPy imported, started with `method`."""
    with context(method).Pool(1) as pool:
        pool.apply(_idle)
        pid = pool._pool[0].pid
        return pss_kib(pid)


def standalone_idle():
    """Pss (KiB) of this script idle in a process of its own, with its imports (NumPy, and
    torch when installed) and nothing else: the interpreter the compiled loader runs in. A
    forked worker shares its libraries' pages with the fork server, so its Pss is lower."""
    idle = subprocess.Popen([sys.executable, os.path.abspath(__file__), "-", "-", "--idle"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        idle.stdout.readline()
        return pss_kib(idle.pid)
    finally:
        idle.stdin.close()
        idle.wait()


def fetch_rate(dataset, batch, collate=None, seconds=3.0):
    """Images/s of fetching and collating shuffled batches in this one process, no loader."""
    collate = collate or stack
    order = list(range(len(dataset)))
    random.shuffle(order)
    seen, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds and seen + batch <= len(order):
        images, _labels = collate([dataset[i] for i in order[seen : seen + batch]])
        seen += batch
    return seen / (time.perf_counter() - start)


def one(args, method, way, sampled):
    """Runs one way under one start method in this process; prints its figures as JSON."""
    block = shmpipe.attach(args.name)
    n = len(block)
    labels = [0] * n if block.labels is None else block.labels.tolist()
    collate = stack
    if way == "shmpipe":
        dataset = shmpipe.Dataset(args.name)
    elif way == "collate":
        dataset, collate = shmpipe.Dataset(args.name), shmpipe.collate
    elif way == "naive":
        dataset = NaiveDataset([np.array(block.images[i]) for i in range(n)], labels)
    elif way == "pillow":
        dataset = PillowDataset(os.path.abspath(args.folder), list(block.paths), labels)
    elif way in ("aug-w0", "aug-w0-recycle"):
        block.close()
        recycle = 2 if way == "aug-w0-recycle" else 0
        figures, peak = compiled_epochs(args.name, args.epochs, sampled == "sampled", recycle)
        print(json.dumps({"seconds": [s for _, s, _ in figures], "first": [f for _, _, f in figures],
                          "peak_kib": peak}))
        return
    elif way == "aug-w8":
        dataset, collate = IndexDataset(n), CompiledCollate(args.name)
    elif way == "aug-views":
        dataset, collate = shmpipe.Dataset(args.name, transform=view_transform), shared_stack
    elif way == "aug-pillow":
        dataset = PillowAugDataset(os.path.abspath(args.folder), list(block.paths), labels)
        collate = shared_stack
    elif way in ("aug-tv-imagefolder", "aug-tv-views"):
        if torch is None or torchvision is None:
            sys.exit(f"{way}: needs torch and torchvision, and --loader torch or auto")
        dataset = (image_folder(args.folder) if way == "aug-tv-imagefolder"
                   else shmpipe.Dataset(args.name, transform=torchvision_transforms(True)))
    else:
        sys.exit(f"unknown way {way!r}")
    block.close()
    figures, peak = epochs(dataset, collate, method, args.workers, args.batch, sampled == "sampled",
                           args.epochs, args.persistent)
    for seen, _, _ in figures:
        assert seen == n, f"{way}: {seen} of {n} images"
    print(json.dumps({"seconds": [s for _, s, _ in figures], "first": [f for _, _, f in figures],
                      "peak_kib": peak}))


def plot(path, rows, dataset_bytes, workers):
    """Bar charts side by side: peak total Pss (with the dataset's size marked), images/s of the
    first epoch, and of the later ones."""
    panels = [("peak total Pss", lambda r: r["peak"] / 2**20, "GiB"),
              ("images/s, first epoch", lambda r: r["first_rate"], "")]
    if any(r["later_rate"] is not None for r in rows):
        panels.append(("images/s, later epochs", lambda r: r["later_rate"] or 0, ""))
    left, height, top, bottom = 50, 300, 40, 60
    panel = 520
    width = left + len(panels) * (panel + left)
    colours = {"shmpipe": "#7fbf7b", "collate": "#1b7837", "naive": "#b2182b", "pillow": "#5e3c99"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="18" font-size="13">Shuffled epochs, {workers} workers, '
           f'{dataset_bytes / 2**30:.2f} GiB dataset (dashed)</text>']
    for k, (title, value, unit) in enumerate(panels):
        x0 = left + k * (panel + left)
        top_value = max(value(r) for r in rows) * 1.1 or 1
        scale = (height - top - bottom) / top_value
        bar = panel / len(rows)
        out.append(f'<text x="{x0}" y="{top - 8}">{title}</text>')
        out.append(f'<line x1="{x0}" y1="{height - bottom}" x2="{x0 + panel}" y2="{height - bottom}" stroke="black"/>')
        for i, row in enumerate(rows):
            v = value(row)
            h = v * scale
            x = x0 + i * bar + 4
            out.append(f'<rect x="{x:.0f}" y="{height - bottom - h:.0f}" width="{bar - 8:.0f}" height="{h:.0f}" '
                       f'fill="{colours.get(row["way"], "grey")}"/>')
            label = f"{v:.2f} {unit}" if unit else f"{v:.0f}"
            out.append(f'<text x="{x:.0f}" y="{height - bottom - h - 3:.0f}">{label}</text>')
            out.append(f'<text x="{x:.0f}" y="{height - bottom + 14}">{row["way"]}</text>')
            out.append(f'<text x="{x:.0f}" y="{height - bottom + 28}">{row["method"]}</text>')
        if k == 0:
            y = height - bottom - dataset_bytes / 2**30 * scale
            out.append(f'<line x1="{x0}" y1="{y:.0f}" x2="{x0 + panel}" y2="{y:.0f}" stroke="black" stroke-dasharray="4"/>')
            out.append(f'<text x="{x0 - 46}" y="{y + 4:.0f}">dataset</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="a kept dataset (shmpipe load DIR --name NAME)")
    parser.add_argument("folder", help="the folder it was loaded from, for the Pillow way")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--methods", default="spawn,forkserver")
    parser.add_argument("--ways", default="shmpipe,collate,naive,pillow")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every way, taking turns; medians")
    parser.add_argument("--plot", metavar="FILE.svg", help="bars of peak memory and images/s")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs per run, each with workers of its own (default 2: the first "
                             "pays for starting the fork server, the later ones are what each "
                             "further epoch of a training costs)")
    parser.add_argument("--persistent", action="store_true",
                        help="workers that outlive an epoch (DataLoader's persistent_workers=True)")
    parser.add_argument("--loader", choices=["auto", "torch", "pool"], default="auto",
                        help="torch's DataLoader (auto: when torch is installed) or a multiprocessing pool")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--idle", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.idle:
        print("idle", flush=True)
        sys.stdin.read()
        return
    global torch
    if args.loader == "pool":
        torch = None
    elif args.loader == "torch" and torch is None:
        sys.exit("--loader torch: torch is not installed")
    if args.one:
        return one(args, *args.one.split(":"))

    block = shmpipe.attach(args.name)
    n = len(block)
    dataset_bytes = sum(int(np.prod(block.images[i].shape)) for i in range(n))
    fetch = {}
    labels = [0] * n
    for way, dataset, collate in (
            ("aug-views", shmpipe.Dataset(args.name, transform=view_transform), stack),
            ("aug-pillow", PillowAugDataset(os.path.abspath(args.folder), list(block.paths), labels),
             stack),
            ("shmpipe", shmpipe.Dataset(args.name), stack),
            ("collate", shmpipe.Dataset(args.name), shmpipe.collate),
            ("pillow", PillowDataset(os.path.abspath(args.folder), list(block.paths), labels), stack)):
        if way in args.ways.split(","):
            fetch[way] = fetch_rate(dataset, args.batch, collate)
        if not way.endswith("pillow"):
            dataset.close()  # this process's mapping would take a share of the workers' Pss
    block.close()
    print(f"dataset {block.name}: {n} images, {dataset_bytes / 2**30:.2f} GiB decoded; "
          f"{args.workers} workers, batches of {args.batch}; "
          f"loader: {'torch DataLoader' if torch else 'multiprocessing pool'}"
          f"{', persistent workers' if args.persistent else ''}; {args.epochs} epoch(s) per run; "
          f"Python {sys.version.split()[0]}")

    for way, rate in fetch.items():
        print(f"one process, no loader: {way} fetches and collates {rate:.0f} images/s")
    for way in ("shmpipe", "collate"):
        if way in fetch and "pillow" in fetch:
            print(f"one process, no loader: {way} / pillow {fetch[way] / fetch['pillow']:.1f}x")
    runs = {}  # (method, way) -> [(first epoch images/s, later epochs images/s, first batch s, peak KiB)]
    idles = {}  # method -> [idle interpreter's Pss KiB], one per round
    ways = args.ways.split(",")

    def run_one(method, way, sampled):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), args.name, args.folder,
                              "--workers", str(args.workers), "--batch", str(args.batch),
                              "--epochs", str(args.epochs), "--loader", args.loader,
                              *(["--persistent"] if args.persistent else []),
                              "--one", f"{method}:{way}:{sampled}"], check=True, capture_output=True, text=True)
        return json.loads(out.stdout.splitlines()[-1])

    def rate_of(seconds):
        return n / seconds

    def workers_of(way):
        """Processes besides this one: none for the compiled loader (the main process is the
        one interpreter, counted as idle)."""
        return 1 if way.startswith("aug-w0") else args.workers

    solos = []  # an idle interpreter of its own's Pss KiB, one per round

    def budget_of(way, idle, solo):
        """The dataset and the idle interpreters a way needs at least (KiB): the compiled
        loader's one interpreter of its own, or the workers, each an idle forked worker."""
        return dataset_bytes / 1024 + (solo if way.startswith("aug-w0") else args.workers * idle)

    for round_ in range(args.rounds):
        for method in args.methods.split(","):
            idle = idle_baseline(method)
            idles.setdefault(method, []).append(idle)
            tag = f"[round {round_ + 1}, {method}]"
            print(f"{tag} idle worker (this script's imports): {idle / 1024:.1f} MiB Pss")
            solo = standalone_idle()
            solos.append(solo)
            print(f"{tag} idle interpreter of its own (the compiled loader's): "
                  f"{solo / 1024:.1f} MiB Pss")
            by_way = {}
            for way in ways:
                # Timed and sampled in two runs: on 2 cores the sampler, which reads every
                # process's smaps_rollup 20 times a second, would take CPU from the job it times.
                timed = run_one(method, way, "timed")
                peak = run_one(method, way, "sampled")["peak_kib"]
                first_rate = rate_of(timed["seconds"][0])
                later = [rate_of(s) for s in timed["seconds"][1:]]
                later_rate = statistics.median(later) if later else None
                runs.setdefault((method, way), []).append((first_rate, later_rate, timed["first"][0], peak))
                by_way[way] = (first_rate, later_rate)
                budget = budget_of(way, idle, solo)
                later_text = f", later epochs {later_rate:6.0f}" if later else ""
                print(f"{tag} {way:8s} first epoch {first_rate:6.0f} images/s "
                      f"(first batch at {timed['first'][0]:.2f} s){later_text}; peak total Pss "
                      f"{peak / 2**20:5.2f} GiB = {peak * 1024 / dataset_bytes:4.2f}x the dataset, "
                      f"{peak / budget:4.2f}x dataset + {workers_of(way)} idle", flush=True)
            for way in ("shmpipe", "collate"):
                if way in by_way and "pillow" in by_way:
                    (f1, l1), (f2, l2) = by_way[way], by_way["pillow"]
                    later_text = f", later epochs {l1 / l2:.1f}x" if l1 else ""
                    print(f"{tag} {way} / pillow images/s: first epoch {f1 / f2:.1f}x{later_text}")
    rows = []
    for (method, way), figures in runs.items():
        later = [l for _, l, _, _ in figures if l is not None]
        rows.append({"method": method, "way": way, "idle": statistics.median(idles[method]),
                     "first_rate": statistics.median(f for f, _, _, _ in figures),
                     "later_rate": statistics.median(later) if later else None,
                     "first_batch": statistics.median(b for _, _, b, _ in figures),
                     "peak": statistics.median(p for _, _, _, p in figures)})
    print()
    print(f"medians of {args.rounds} round(s), {args.epochs} epoch(s) each:")
    print("| start method | way | images/s, first epoch | first batch | images/s, later epochs | "
          "peak total Pss | x dataset | x (dataset + workers x idle) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        budget = budget_of(r["way"], r["idle"], statistics.median(solos))
        later = "-" if r["later_rate"] is None else f"{r['later_rate']:.0f}"
        print(f"| {r['method']} | {r['way']} | {r['first_rate']:.0f} | {r['first_batch']:.2f} s | {later} | "
              f"{r['peak'] / 2**20:.2f} GiB | {r['peak'] * 1024 / dataset_bytes:.2f} | {r['peak'] / budget:.2f} |")
    if args.plot:
        plot(args.plot, rows, dataset_bytes, args.workers)
    for method in args.methods.split(","):
        by_way = {r["way"]: r for r in rows if r["method"] == method}
        for way in ("shmpipe", "collate"):
            if way in by_way and "pillow" in by_way:
                mine, theirs = by_way[way], by_way["pillow"]
                later = (f", later epochs {mine['later_rate'] / theirs['later_rate']:.1f}x"
                         if mine["later_rate"] else "")
                print(f"[{method}] {way} / pillow images/s (medians): first epoch "
                      f"{mine['first_rate'] / theirs['first_rate']:.1f}x{later}")
        for way in ("aug-w0", "aug-w0-recycle", "aug-w8"):
            for other in ("aug-pillow", "aug-views", "aug-tv-imagefolder", "aug-tv-views"):
                if way in by_way and other in by_way:
                    mine, theirs = by_way[way], by_way[other]
                    later = (f", later epochs {mine['later_rate'] / theirs['later_rate']:.1f}x"
                             if mine["later_rate"] and theirs["later_rate"] else "")
                    print(f"[{method}] {way} / {other} images/s (medians): first epoch "
                          f"{mine['first_rate'] / theirs['first_rate']:.1f}x{later}")


if __name__ == "__main__":
    main()
