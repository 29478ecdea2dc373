"""Figures drawn by another process, and the small inputs they are drawn from.

Nothing here imports matplotlib: the process that computes the products does not pay for
it (~0.4 s); the drawing process imports :mod:`talik.tasks.figures`. Nor xarray, when the
module loads: a command can start the drawing process first, so that its imports run on
the other core while the command's own are done.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (importing xarray takes ~0.3 s: the figures' process may start before)
    import xarray as xr

__all__ = ["FIGURE_SETS", "FiguresInBackground", "published_at_points"]

FIGURE_SETS = ("network", "results")
"""The figure sets :class:`FiguresInBackground` draws (see ``talik.tasks.figures``)."""


def published_at_points(product: xr.Dataset, points: xr.Dataset) -> xr.DataArray:
    """The product's (filtered) displacement at each comparison point, ``(time, point)`` mm.

    One indexed read of the product for every point.
    """
    import xarray as xr

    return product["displacement"].isel(
        y=xr.DataArray(points["row"].values.astype(int), dims="point"),
        x=xr.DataArray(points["col"].values.astype(int), dims="point")).load()


class FiguresInBackground:
    """Figures drawn by another Python process while this one goes on.

    The process starts (and imports matplotlib) when this object is made, then waits; call
    :meth:`draw` with a figure set's inputs once they exist (several times: each set is drawn
    as it arrives), and :meth:`wait` for the paths. The process imports only
    :mod:`talik.tasks.figures` (no ``__main__`` guard needed, nothing forked). Inputs go over
    in pickle files beside the figures, removed when done. Used as a context manager, the
    process is stopped if the caller fails before every figure is drawn.
    """

    def __init__(self) -> None:
        import subprocess
        import sys

        self._inputs: list[Path] = []
        self._done = False
        code = "from talik.tasks.figures import _draw_requested; _draw_requested()"
        self._proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def draw(self, folder: Path, which: str, *args, **kwargs) -> None:
        """Hand over the arguments of a figure set; its drawing starts.

        ``which``: ``network`` (:func:`talik.tasks.figures.network_figures`) or ``results``
        (:func:`talik.tasks.figures.result_figures`). Never raises for the process: if it
        died, :meth:`wait` reports it.
        """
        import pickle

        if which not in FIGURE_SETS:
            raise ValueError(f"no figure set {which!r}; one of {FIGURE_SETS}")
        inputs = Path(folder) / f".figure_inputs_{which}.pkl"
        inputs.write_bytes(pickle.dumps((which, Path(folder), args, kwargs)))
        self._inputs.append(inputs)
        try:
            self._proc.stdin.write(f"{inputs}\n")
            self._proc.stdin.flush()  # (closed by wait's communicate)
        except OSError:  # the process is gone: said by wait(), after the caller's product
            pass

    def wait(self) -> list[Path]:
        """Wait for every figure asked for; their paths (raises if the process failed)."""
        try:
            out, err = self._proc.communicate()
        except (OSError, ValueError):  # stdin already broken: read what is left
            out, err = self._proc.stdout.read(), self._proc.stderr.read()
            self._proc.wait()
        self._done = True
        self._remove_inputs()
        if self._proc.returncode != 0:
            raise RuntimeError(f"drawing the figures failed:\n{err[-4000:]}")
        return [Path(line) for line in out.splitlines() if line]

    def _remove_inputs(self) -> None:
        for inputs in self._inputs:
            inputs.unlink(missing_ok=True)

    def __enter__(self) -> FiguresInBackground:
        return self

    def __exit__(self, kind, *_) -> None:
        if self._proc.poll() is None and (kind is not None or not self._done):
            self._proc.kill()  # nothing (more) to draw
            self._proc.communicate()
        self._remove_inputs()
