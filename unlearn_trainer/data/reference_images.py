"""Reference images for ViKeR: a seeded pool of irrelevant images, and the forget rows with their image swapped.

ViKeR (Eq. 4) averages the frozen model's next-token distribution over k images of *other* people fed with
the same question and answer prefix. :class:`ReferenceImagePool` holds those images and decides, with a seed,
which k are used for each forget sample:

- ``sampling="fixed"`` (default, as in the paper: one reference set I' for the whole forget set): the same k
  images for every sample, the first k of a seeded permutation of the pool (all of them, in order, when the
  pool has exactly k);
- ``sampling="per_sample"``: k images drawn without replacement for each forget sample from a generator
  seeded with ``seed`` and the sample's index, so the draw does not depend on batch order, epoch or process.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .collator import row_images, row_name, single_image

__all__ = ["ReferenceImagePool", "swap_in_reference_images"]

class ReferenceImagePool:
    """The reference images of ViKeR and the seeded choice of k of them per forget sample.

    Args:
        images: a list of images (PIL, arrays, tensors: whatever the processor takes), or a ``datasets.Dataset``
            / list of rows with an image column (``image``, ``images`` with one image, or ``image_column``).
            Rows are read lazily, only when their image is drawn.
        num_reference_images: images per forget sample (the paper's k, default 5; >= 1, checked by ViKeRConfig).
        seed: seed of the choice.
        sampling: "fixed" (the same k for every sample) or "per_sample" (a seeded draw per sample index), as
            ``ViKeRConfig.reference_sampling`` (which validates it).
        image_column: the column holding the image, for rows.
    """

    def __init__(self, images, num_reference_images: int = 5, seed: int = 0, sampling: str = "fixed",
                 image_column: str | None = None):
        if images is None:
            raise ValueError("ViKeR needs reference images: pass reference_images= (images of irrelevant people).")
        if isinstance(images, (str, bytes)) or not hasattr(images, "__len__") or not hasattr(images, "__getitem__"):
            raise TypeError(
                f"reference_images must be a list of images or a dataset of rows with an image column, got "
                f"{type(images).__name__}."
            )
        if len(images) < num_reference_images:
            raise ValueError(
                f"ViKeR needs num_reference_images={num_reference_images} reference images but reference_images has "
                f"only {len(images)}; give at least {num_reference_images} images or lower num_reference_images."
            )
        column_names = getattr(images, "column_names", None)
        if column_names is not None and image_column is None and not {"image", "images"} & set(column_names):
            raise ValueError(
                f"The reference dataset has no 'image' or 'images' column (columns: {column_names}); pass "
                f"image_column=."
            )
        self.source, self.seed, self.sampling, self.image_column = images, seed, sampling, image_column
        self.num_reference_images = num_reference_images
        if sampling == "fixed":
            if len(images) == num_reference_images:
                self._fixed = list(range(num_reference_images))
            else:
                g = torch.Generator().manual_seed(seed)
                self._fixed = torch.randperm(len(images), generator=g)[:num_reference_images].tolist()
            self._fixed_images = [self.image(i) for i in self._fixed]  # validated once, reused for every sample

    def __len__(self) -> int:
        return len(self.source)

    def image(self, index: int):
        """Image ``index`` of the pool."""
        return single_image(self.source[index], index, self.image_column)

    def indices_for(self, sample_index: int) -> list[int]:
        """Positions in the pool of the k reference images of forget sample ``sample_index``."""
        if self.sampling == "fixed":
            return list(self._fixed)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(sample_index))
        return torch.randperm(len(self.source), generator=g)[: self.num_reference_images].tolist()

    def images_for(self, sample_index: int) -> list:
        """The k reference images of forget sample ``sample_index``."""
        if self.sampling == "fixed":
            return list(self._fixed_images)
        return [self.image(i) for i in self.indices_for(sample_index)]


def swap_in_reference_images(row: dict, images: Sequence, index: int | None = None) -> list[dict]:
    """Copies of the forget ``row`` (same question and answer) with its single image replaced by each of
    ``images``: ViKeR's inputs ``(I'_j, x, y)``. Raises, naming the row, if it has no image or several."""
    if not isinstance(row, dict):
        raise TypeError(f"forget row #{index} is a {type(row).__name__}, expected a dict.")
    own = row_images(row)
    if len(own) != 1:
        what = "no image" if not own else f"{len(own)} images"
        raise ValueError(
            f"Forget {row_name(row, index)} has {what}; ViKeR swaps the single image of each forget row for reference "
            f"images, so every forget row needs exactly one image."
        )
    out = []
    for image in images:
        new = {k: v for k, v in row.items() if k not in ("image", "images", "__index__")}
        new["image"] = image
        out.append(new)
    return out
