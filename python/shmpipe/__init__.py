"""shmpipe: a dataset decoded once into shared memory by `shmpipe load`, seen from any Python
process by name as NumPy arrays, with no copy.

    import shmpipe
    ds = shmpipe.load("photos/", name="faces", resize="224x224", fit="cover")  # `shmpipe load`
    ds = shmpipe.attach("faces")     # the dataset made by `shmpipe load DIR --name faces`
    ds.array.shape                   # (N, H, W, C) uint8, when every image has one shape
    ds.images[3]                     # (H, W, C) view of image 3, made when asked for
    ds.paths[3]                      # its source path, relative to the loaded folder
    ds.labels, ds.classes            # int64 class per image, class names (`load --labels folder`)
    ds.original_sizes[3]             # the source's (width, height) before any resize
    ds.close()                       # views taken before stay valid
    shmpipe.read_export("faces.npz") # what `shmpipe export faces faces.npz` wrote, any shapes

    train = shmpipe.Dataset("faces", transform=None)   # for torch.utils.data.DataLoader
    image, label = train[3]
    loader = DataLoader(train, batch_size=64, num_workers=8, collate_fn=shmpipe.collate)
    for images, labels in loader: ...  # (64, H, W, C) arrays gathered here, not sent by workers

    aug = shmpipe.RandomResizedCrop(224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    for epoch in range(10):            # compiled crops, flips and normalisation, on threads,
        batches = shmpipe.Loader(train, aug, batch_size=64)   # in this process: no worker
        batches.set_epoch(epoch)
        for images, labels in batches: ...  # (64, 3, 224, 224) float32

Views are read-only unless `attach(name, writable=True)`. A handle holds the block's lock
(shared, or exclusive when writable) while it or any of its views lives, so `shmpipe apply` and
`save` refuse rather than race it. Pickling a handle or a `Dataset` sends its name: the receiver
attaches by name (fork, spawn or forkserver), no pixel is copied, and the block is never handed
to Python's resource tracker, which would unlink it. Only `shmpipe rm NAME` removes a dataset.
A batch made by `shmpipe.collate` pickles the same way: the block's name and the images' indices,
and the process that uses it copies the images out of the block.
"""
from ._augment import CenterCrop, Loader, RandomResizedCrop
from ._batch import Batch, collate
from ._block import Block, BlockError, attach
from ._layout import LAYOUT_VERSION
from ._cli import load, program
from ._dataset import Dataset
from ._export import Export, read_export

__all__ = ["attach", "Batch", "Block", "BlockError", "CenterCrop", "collate", "Dataset",
           "Export", "LAYOUT_VERSION", "load", "Loader", "program", "RandomResizedCrop",
           "read_export"]
# One version for the package and the program (Cargo.toml's; tests/integration/cli.rs holds them together).
__version__ = "0.5.0"
