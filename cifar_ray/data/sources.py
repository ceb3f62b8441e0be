"""Finding and reading the three kinds of source: the CIFAR-10 Python release,
a class-folder tree with train/ and test/, and a class-folder tree without a split.

Image trees are decoded once and cached on disk as uint8 arrays. The cache key
is built from every file's relative path, size and modification time. A
changed, added or removed file therefore means a new decode, and anything else
a fast load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cifar_ray import io
from cifar_ray.data.images import IMAGE_EXTENSIONS, SkippedFile, decode_many

logger = logging.getLogger(__name__)

DATA_ENV = "CIFAR_RAY_DATA"
CACHE_ENV = "CIFAR_RAY_CACHE"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
# Bumped whenever the cached arrays' layout or decoding changes.
_CACHE_VERSION = 1


class DataNotFoundError(FileNotFoundError):
    """No usable data set was found; the message lists where it looked."""


@dataclass
class RawData:
    """Decoded images before splitting. Images are (N, H, W, 3) uint8."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray | None
    test_labels: np.ndarray | None
    class_names: list[str]
    kind: str  # "cifar-python", "split-tree" or "class-tree"
    source: str
    skipped: list[SkippedFile] = field(default_factory=list)
    report_path: str | None = None


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cifar_ray")


def resolve_data_path(data: str | None, cache_dir: Path, download: bool) -> Path:
    """Return the data set's path: `data`, else $CIFAR_RAY_DATA, else the cache folder (downloading there)."""
    if data:
        path = Path(data).expanduser()
        if not path.exists():
            raise DataNotFoundError(
                f"data path {path} (from --data) does not exist; point --data at a CIFAR-10 folder, "
                f"a {CIFAR_ARCHIVE} archive or a class-folder tree"
            )
        return path
    if os.environ.get(DATA_ENV):
        path = Path(os.environ[DATA_ENV]).expanduser()
        if not path.exists():
            raise DataNotFoundError(
                f"data path {path} (from ${DATA_ENV}) does not exist; fix ${DATA_ENV} or pass --data"
            )
        return path

    cached = cache_dir / CIFAR_FOLDER
    if cached.is_dir():
        return cache_dir
    if download:
        try:
            from torchvision.datasets import CIFAR10

            logger.info("downloading CIFAR-10 into %s", cache_dir)
            CIFAR10(str(cache_dir), train=True, download=True)
            return cache_dir
        except Exception as error:  # torchvision raises URLError, OSError or RuntimeError offline
            download_note = f"downloading it there failed ({type(error).__name__}: {error})"
    else:
        download_note = "downloading is turned off"
    raise DataNotFoundError(
        "no CIFAR-10 data found. Looked in:\n"
        "  1. --data: not given\n"
        f"  2. ${DATA_ENV}: not set\n"
        f"  3. the cache folder {cached}: missing, and {download_note}\n"
        f"Pass --data PATH, set {DATA_ENV}=PATH, or set ${CACHE_ENV} to a folder holding {CIFAR_FOLDER}/."
    )


def load_source(path: Path, image_size: int, cache_dir: Path) -> RawData:
    """Read any supported source at `path` into decoded arrays."""
    if path.is_file():
        if path.name.endswith((".tar.gz", ".tgz")):
            return _load_cifar_python(_extract_archive(path, cache_dir), image_size, source=str(path))
        raise ValueError(f"data path {path} is a file but not a CIFAR-10 .tar.gz archive; pass a folder or the archive")
    if (path / CIFAR_FOLDER).is_dir():
        return _load_cifar_python(path, image_size, source=str(path))
    if (path / "data_batch_1").is_file():
        return _load_cifar_python(path.parent, image_size, source=str(path))
    if (path / CIFAR_ARCHIVE).is_file():
        return _load_cifar_python(_extract_archive(path / CIFAR_ARCHIVE, cache_dir), image_size, source=str(path))
    if (path / "train").is_dir() and (path / "test").is_dir():
        return _load_tree(path, image_size, cache_dir, split=True)
    return _load_tree(path, image_size, cache_dir, split=False)


def _extract_archive(archive: Path, cache_dir: Path) -> Path:
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir / "extracted" / key
    if (target / CIFAR_FOLDER).is_dir():
        return target
    partial = target.with_name(key + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(partial, filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(
            f"CIFAR-10 archive {archive} is truncated or corrupt ({error}); download "
            f"{CIFAR_ARCHIVE} again (https://www.cs.toronto.edu/~kriz/{CIFAR_ARCHIVE}) or delete it so that "
            "cifar-ray fetches a fresh copy"
        ) from None
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def _load_cifar_python(root: Path, image_size: int, source: str) -> RawData:
    from torchvision.datasets import CIFAR10

    try:
        # torchvision checks every batch file against the release's MD5 sums,
        # so a partial or altered copy fails here instead of being trained on.
        train = CIFAR10(str(root), train=True, download=False)
        test = CIFAR10(str(root), train=False, download=False)
    except RuntimeError as error:
        raise ValueError(
            f"CIFAR-10 files under {root / CIFAR_FOLDER} are missing or corrupt ({error}); "
            f"delete that folder and extract {CIFAR_ARCHIVE} again"
        ) from None
    train_images, test_images = train.data, test.data
    if image_size != train_images.shape[1]:
        train_images, test_images = resize_batch(train_images, image_size), resize_batch(test_images, image_size)
    return RawData(
        train_images=train_images,
        train_labels=np.asarray(train.targets, dtype=np.int64),
        test_images=test_images,
        test_labels=np.asarray(test.targets, dtype=np.int64),
        class_names=list(train.classes),
        kind="cifar-python",
        source=source,
    )


def resize_batch(images: np.ndarray, image_size: int) -> np.ndarray:
    """Resize (N, H, W, 3) uint8 images with antialiased bilinear interpolation."""
    import torch
    from torch.nn import functional as F

    out = np.empty((len(images), image_size, image_size, 3), dtype=np.uint8)
    for start in range(0, len(images), 4096):
        batch = torch.from_numpy(images[start : start + 4096]).permute(0, 3, 1, 2).float()
        resized = F.interpolate(batch, size=(image_size, image_size), mode="bilinear", antialias=True)
        out[start : start + 4096] = resized.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return out


def _list_class_tree(root: Path) -> tuple[list[str], list[tuple[str, int, int, int]]]:
    """Return class names and (relative path, class index, size, mtime_ns) for every file under `root`."""
    class_names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not class_names:
        raise ValueError(
            f"{root} has no class folders; expected {root}/<class>/<image files>, or {root}/train/<class>/ "
            f"and {root}/test/<class>/, or the CIFAR-10 Python release"
        )
    files = []
    for index, name in enumerate(class_names):
        for folder, subfolders, filenames in os.walk(root / name):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for filename in sorted(filenames):
                full = os.path.join(folder, filename)
                stat = os.stat(full)
                files.append((os.path.relpath(full, root), index, stat.st_size, stat.st_mtime_ns))
    return class_names, files


def _load_tree(path: Path, image_size: int, cache_dir: Path, split: bool) -> RawData:
    started = time.perf_counter()
    parts = ["train", "test"] if split else [""]
    listings = {part: _list_class_tree(path / part) for part in parts}
    if split and listings["test"][0] != listings["train"][0]:
        train_classes, test_classes = listings["train"][0], listings["test"][0]
        raise ValueError(
            f"class folders differ between {path / 'train'} and {path / 'test'}: only in train: "
            f"{sorted(set(train_classes) - set(test_classes))}, only in test: {sorted(set(test_classes) - set(train_classes))}"
        )
    class_names = listings[parts[0]][0]

    digest = hashlib.sha256(f"v{_CACHE_VERSION}|{image_size}|{path.resolve()}".encode())
    for part in parts:
        for relpath, label, size, mtime in listings[part][1]:
            digest.update(f"{part}|{relpath}|{label}|{size}|{mtime}\n".encode())
    cache = cache_dir / "decoded" / digest.hexdigest()[:20]
    meta_path = cache / "meta.json"

    if meta_path.is_file():
        raw = _read_cache(cache, path, split)
        logger.info(
            "loaded %d images of %s from the cache %s in %.2f s",
            len(raw.train_images) + (0 if raw.test_images is None else len(raw.test_images)),
            path,
            cache,
            time.perf_counter() - started,
        )
        return raw

    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    skipped: list[SkippedFile] = []
    for part in parts:
        files = listings[part][1]
        root = path / part
        logger.info("decoding %d files under %s (done once; later runs read the cache)", len(files), root)
        images, kept, part_skipped = decode_many([str(root / f[0]) for f in files], image_size)
        labels = np.asarray([files[i][1] for i in kept], dtype=np.int64)
        arrays[part] = (images, labels)
        skipped += part_skipped

    cache.mkdir(parents=True, exist_ok=True)
    for part, (images, labels) in arrays.items():
        prefix = part or "all"
        io.write_npy(cache / f"{prefix}_images.npy", images)
        io.write_npy(cache / f"{prefix}_labels.npy", labels)
    report_path = cache / "skipped.json"
    io.write_json(report_path, [{"path": s.path, "reason": s.reason} for s in skipped])
    # meta.json is written last: its presence marks a complete cache entry.
    io.write_json(meta_path, {"class_names": class_names, "source": str(path), "split": split, "image_size": image_size})
    if skipped:
        logger.warning("skipped %d unusable files under %s; the list with reasons is in %s", len(skipped), path, report_path)
        for item in skipped[:20]:
            logger.warning("skipped %s: %s", item.path, item.reason)
        if len(skipped) > 20:
            logger.warning("... and %d more skipped files, see %s", len(skipped) - 20, report_path)
    logger.info("decoded and cached %s in %.1f s (cache: %s)", path, time.perf_counter() - started, cache)
    return _read_cache(cache, path, split)


def _read_cache(cache: Path, path: Path, split: bool) -> RawData:
    meta = json.loads((cache / "meta.json").read_text())
    skipped_records = json.loads((cache / "skipped.json").read_text())
    prefix = "train" if split else "all"
    return RawData(
        train_images=np.load(cache / f"{prefix}_images.npy"),
        train_labels=np.load(cache / f"{prefix}_labels.npy"),
        test_images=np.load(cache / "test_images.npy") if split else None,
        test_labels=np.load(cache / "test_labels.npy") if split else None,
        class_names=meta["class_names"],
        kind="split-tree" if split else "class-tree",
        source=str(path),
        skipped=[SkippedFile(r["path"], r["reason"]) for r in skipped_records],
        report_path=str(cache / "skipped.json"),
    )


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS
