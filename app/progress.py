"""tqdm progress bars wired to the engine's (done, total, what) callbacks."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tqdm import tqdm


class Bar:
    def __init__(self, desc: str, quiet: bool = False):
        self.desc, self.quiet, self.bar = desc, quiet, None

    def __call__(self, done: int, total: int, what: str = "") -> None:
        if self.quiet:
            return
        if self.bar is None or self.bar.total != total:
            self.close()
            self.bar = tqdm(total=total, desc=self.desc, file=sys.stderr, leave=True, dynamic_ncols=True)
        self.bar.n = done
        if what:
            self.bar.set_postfix_str(what[-40:], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def progress_bar(desc: str, quiet: bool = False) -> Callable[[int, int, str], None]:
    return Bar(desc, quiet)
