"""Read path: random training batches of 256x256 slices from a slice store vs from DICOM files.

    .venv/bin/python benchmarks/read_path.py [--n 400] [--batch 32] [--batches 40] [--epochs 3]

Writes N synthetic 512x512 CT slices in the RSNA layout, ingests them into a store
(256x256, selection "all"), then draws the same random batches (seeded) four ways:
  store, load() + numpy   SliceStore.load(["images"]) once (timed separately), then
                          images[idx] per batch: what training code does; also shown with
                          the load amortised over 1 and 10 epochs of N slices
  store, zarr batch       SliceStore.load(["images"], index=idx) per batch (one bulk read)
  store, zarr per slice   z[i] for each slice of the batch (~0.5 ms each in zarr-python 3)
  DICOM                   read_slice(path).hu (decode + HU) and resize_slices to 256 per slice
Goal: the store path >= 20x the DICOM path. The first batch of each way is checked to give the
same int16 pixels.

Then the read paths of training (issue 10), in one run, each delivering every slice of the
store once per epoch in shuffled batches of --batch:
  in memory      load_store() (timed, included) then EpochSampler batches indexed in memory
  streamed       ShardStream without a cache: the same uniform batches as in memory (issue 21
                 §2), the rows of --shuffle-shards shards' worth of consecutive batches gathered
                 at a time, each shard they lie in through the checked read, a prefetch thread;
                 every epoch decodes every shard again (more than once when the store spans more
                 shards than a gathering holds)
  streamed through the node cache
                 ShardStream with a fresh, empty shard cache (train/shard_cache.py) in a temporary
                 folder: a shard's first read goes through the checked read and writes its file
                 (timed, included), every row is then copied out of the shard files' maps
over 1 epoch and over --epochs epochs, with the ratio of each to in memory (goal >= 0.8); one more
epoch over a cache built beforehand, as another process on the node sees it (each file hashed
once); and the peak memory (tracemalloc) of one epoch of in memory and streamed on synthetic 64x64
stores of 4 and 32 shards.
"In memory" is each worker reading the store into its own memory (ICHBENCH_NODE_CACHE=off, set
here unless given): with the node cache a second load maps the first one's files, which measures
the cache (benchmarks/shared_store.py), not the read. Every cache file here is written once and
read back from the page cache; for a store larger than memory later epochs read them from disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ICHBENCH_NODE_CACHE", "off")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import make_source  # noqa: E402 - the same synthetic files as the ingest benchmark


def store_order(paths):
    """Store row -> DICOM path: the rsna reader stores series by uid, slices by position."""
    import pydicom
    keys = []
    for p in paths:
        ds = pydicom.dcmread(str(p), stop_before_pixels=True)
        keys.append((str(ds.SeriesInstanceUID), float(ds.ImagePositionPatient[2]), p.stem, p))
    return [k[-1] for k in sorted(keys)]


def timed(fn, batches) -> tuple[float, np.ndarray]:
    first = fn(batches[0])
    t = time.perf_counter()
    for idx in batches:
        fn(idx)
    return time.perf_counter() - t, first


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="slices in the store (default 400)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the in-memory vs streamed comparison")
    ap.add_argument("--shuffle-shards", type=int, default=16,
                    help="streamed without a cache: rows gathered at a time, in shards' worth (data.shuffle_shards)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch threads for the DICOM path's resize (default 1: fastest on a shared machine)")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.torch_threads)

    from ichbench.datasets.base import IngestOptions
    from ichbench.datasets.dicom_io import read_slice
    from ichbench.datasets.rsna import RsnaDataset
    from ichbench.preprocess.resize import resize_slices
    from ichbench.ingest import ingest
    from ichbench.store.reader import SliceStore

    tmp = Path(tempfile.mkdtemp(prefix="ichbench-read-bench-"))
    try:
        paths = make_source(tmp / "rsna", args.n)
        [res] = ingest(RsnaDataset(), tmp / "home", tmp / "rsna",
                       options=IngestOptions(size=256, selection="all", holdout=0))
        store = SliceStore(res.path)
        by_row = store_order(paths)
        for p in paths:
            p.read_bytes()                                   # warm page cache for DICOM too
        rng = np.random.default_rng(args.seed)
        batches = [np.sort(rng.choice(args.n, args.batch, replace=False)) for _ in range(args.batches)]
        nslices = args.batch * args.batches

        t = time.perf_counter()
        images = store.load(["images"])["images"]
        first_load_s = time.perf_counter() - t
        t = time.perf_counter()
        store.load(["images"])   # again: without zarr's one-off start-up in this process
        load_s = time.perf_counter() - t
        z = store["images"]
        ways = {
            "store, load() + numpy": lambda idx: images[idx],
            "store, zarr batch": lambda idx: store.load(["images"], index=idx)["images"],
            "store, zarr per slice": lambda idx: np.stack([z[int(i)] for i in idx]),
            "DICOM decode + resize": lambda idx: resize_slices(
                np.stack([read_slice(by_row[int(i)]).hu for i in idx]), 256),
        }
        results = {name: timed(fn, batches) for name, fn in ways.items()}
        ref = results["DICOM decode + resize"][1]
        dicom_rate = nslices / results["DICOM decode + resize"][0]
        print(f"store: {args.n} slices 256x256; load() of all images: {first_load_s * 1e3:.0f} ms the first "
              f"time in this process, {load_s * 1e3:.0f} ms again ({load_s / args.n * 1e3:.2f} ms/slice)")
        print(f"{args.batches} random batches of {args.batch} slices (seed {args.seed}); "
              f"torch threads {torch.get_num_threads()}")
        for name, (secs, first) in results.items():
            same = np.array_equal(first, ref)
            print(f"  {name:24s} {args.batches / secs:9.1f} batches/s {nslices / secs:10.0f} slices/s"
                  f"   {nslices / secs / dicom_rate:7.1f}x DICOM   same pixels: {same}")
        numpy_rate = nslices / results["store, load() + numpy"][0]
        for epochs in (1, 10):   # the one-off (first) load() amortised over a training run
            rate = epochs * args.n / (first_load_s + epochs * args.n / numpy_rate)
            print(f"  load() + numpy over {epochs:2d} epoch(s), load included: {rate:9.0f} slices/s "
                  f"({rate / dicom_rate:.1f}x DICOM)   goal >= 20x")
        compare_paths(store, args, tmp)
        compare_memory(tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare_paths(store, args, tmp: Path) -> None:
    """Slices delivered per second by the engine's read paths, load() counted in memory's and the
    node cache's build counted in its streamed path's."""
    import torch
    from ichbench.train import shard_cache
    from ichbench.train.data import EpochSampler, load_store
    from ichbench.train.stream import ShardStream

    def in_memory(epochs: int) -> float:
        t = time.perf_counter()
        arrays = load_store(store.path, 256, names=("images", "labels", "volume"))
        every = torch.arange(len(arrays))
        sampler = EpochSampler(lambda g: every, args.batch, None, torch.Generator().manual_seed(args.seed))
        for _ in range(epochs):
            for idx in sampler.epoch():
                arrays.images[idx]
        return time.perf_counter() - t

    def streamed(epochs: int, cache_root: Path | None = None) -> float:
        t = time.perf_counter()
        cache = None if cache_root is None else shard_cache.ShardCache(store, "images", 256, cache_root)
        s = ShardStream(store, np.arange(store.n_slices), 256, args.batch, None,
                        torch.Generator().manual_seed(args.seed), args.shuffle_shards, cache=cache)
        for _ in range(epochs):
            for _batch in s.epoch():
                pass
        return time.perf_counter() - t

    def fresh_cache() -> Path:
        return Path(tempfile.mkdtemp(prefix="node-cache-", dir=tmp))

    print(f"training read paths: every slice once per epoch, batches of {args.batch}, "
          f"the same uniform batches on every path; ratios are to in memory (goal >= 0.8)")
    for epochs in sorted({1, args.epochs}):
        mem, stream, cached = in_memory(epochs), streamed(epochs), streamed(epochs, fresh_cache())
        n = epochs * store.n_slices
        print(f"  {epochs:2d} epoch(s): in memory (load included) {n / mem:7.0f} slices/s; "
              f"streamed {n / stream:7.0f} slices/s, ratio {mem / stream:.2f}; "
              f"streamed through the node cache (built in epoch 1) {n / cached:7.0f} slices/s, "
              f"ratio {mem / cached:.2f}")
    built = fresh_cache()
    streamed(1, built)
    shard_cache._CHECKED.clear()   # as another process on the node: each file is hashed on its first use
    mem, other = in_memory(1), streamed(1, built)
    print(f"   1 epoch, node cache built by another process (each file hashed once): "
          f"{store.n_slices / other:7.0f} slices/s, ratio {mem / other:.2f}")


def compare_memory(tmp: Path, args) -> None:
    """Peak traced memory of one epoch of each path as the store grows 8x (2 shards' worth of rows
    gathered at a time)."""
    import gc
    import tracemalloc

    import torch
    from ichbench.store.layout import SHARD_SLICES
    from ichbench.store.reader import SliceStore
    from ichbench.store.writer import StoreWriter
    from ichbench.train.data import load_store
    from ichbench.train.stream import ShardStream

    def peak(fn) -> float:
        gc.collect()
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1] / 1e6
        finally:
            tracemalloc.stop()

    print("peak traced memory of one epoch (64x64 slices, streamed gathering 2 shards' worth of rows at a time):")
    rng = np.random.default_rng(args.seed)
    for shards in (4, 32):
        path = tmp / f"mem{shards}.zarr"
        w = StoreWriter(path, size=64, with_masks=False, with_brain=False)
        for k in range(shards):
            w.add({"id": f"v{k}", "spacing": [5, 1, 1]}, rng.normal(30, 20, (SHARD_SLICES, 64, 64)).astype(np.int16),
                  np.zeros((SHARD_SLICES, 7), np.uint8))
        w.close({"dataset": "bench", "role": "pretraining"}, {"size": 64})
        st = SliceStore(path)
        s = ShardStream(st, np.arange(st.n_slices), 64, args.batch, None, torch.Generator().manual_seed(0), 2)
        mem = peak(lambda: load_store(path, 64, names=("images", "labels", "volume")))
        streamed = peak(lambda: sum(1 for _ in s.epoch()))
        print(f"  {shards:2d} shards ({st.n_slices * 64 * 64 * 2 / 1e6:5.1f} MB of images): "
              f"in memory {mem:6.1f} MB, streamed {streamed:5.1f} MB")


if __name__ == "__main__":
    main()
