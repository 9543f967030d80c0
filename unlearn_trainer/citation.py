"""The paper a method implements: declared on its trainer class (``UnlearnTrainer.citation``), read by the card."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Citation"]


@dataclass(frozen=True)
class Citation:
    """The paper a method implements, the method's display name and a one-line statement of its objective."""

    name: str
    title: str
    authors: str
    venue: str
    url: str | None = None
    summary: str = ""

    def __str__(self) -> str:
        text = f'{self.authors}. "{self.title}". {self.venue}.'
        return f"{text} {self.url}" if self.url else text
