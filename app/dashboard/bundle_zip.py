"""A bundle as a zip for the dashboard's download button, and only a bundle of this lab.

The page also accepts a bundle directory typed in by hand (to show and verify it). Zipping that
path as given would hand out any folder the dashboard's user can read that holds a manifest.json,
and following a symlink inside a bundle would pack files from elsewhere. So: only folders under
the state folder's `exports/` are zipped, and links are never followed or packed.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from pruning import settings
from pruning.errors import TicketLabError


def zippable(root: Path, exports_dir: Path | None = None) -> Path:
    """The bundle folder, resolved, if it may be zipped; otherwise one clear TicketLabError."""
    exports_dir = (exports_dir or settings.state_dir() / "exports").resolve()
    if root.is_symlink():
        raise TicketLabError(f"{root} is a link; only bundle folders under {exports_dir} are offered as a zip.")
    real = root.resolve()
    if real.parent != exports_dir or not (real / "manifest.json").is_file() or (real / "manifest.json").is_symlink():
        raise TicketLabError(f"{root} is not a bundle under {exports_dir}: only those are offered as a zip "
                             f"(copy the folder yourself for others).")
    return real


def zip_bundle(root: Path, exports_dir: Path | None = None) -> bytes:
    real = zippable(root, exports_dir)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for dirpath, dirs, files in os.walk(real, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(dirpath, d)))
            for name in sorted(files):
                p = Path(dirpath) / name
                if p.is_symlink() or not p.is_file():  # never pack what a link points at
                    continue
                z.write(p, Path(real.name) / p.relative_to(real))
    return buf.getvalue()
