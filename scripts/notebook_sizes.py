"""Sizes of the committed notebooks and every PNG stored twice (in outputs or saved widget state).

    python scripts/notebook_sizes.py [notebooks/*.ipynb]

Prints each notebook's size and PNG count, the total, and any PNG whose bytes appear more than once
across all of them; exits 1 if a notebook is over 400 KB, all of them together over 3.2 MB (nine notebooks), or a PNG is
stored twice.
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

LIMIT, TOTAL_LIMIT = 400_000, 3_200_000


def pngs(node, where: str):
    """Every base64 PNG in a notebook's JSON, with where it sits."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image/png" and isinstance(value, str):
                yield where, value
            else:
                yield from pngs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from pngs(value, f"{where}[{i}]")


def main(paths: list[str]) -> int:
    paths = paths or sorted(str(p) for p in Path("notebooks").glob("[0-9]*.ipynb"))
    seen: dict[str, list[str]] = defaultdict(list)
    total, bad = 0, False
    for path in paths:
        size = Path(path).stat().st_size
        total += size
        nb = json.loads(Path(path).read_text())
        found = list(pngs(nb, ""))
        for where, data in found:
            seen[hashlib.sha256(data.encode()).hexdigest()].append(f"{Path(path).name}{where[:60]}")
        flag = "  OVER 400 KB" if size > LIMIT else ""
        bad |= size > LIMIT
        print(f"{Path(path).name:<28} {size / 1000:>7.0f} KB  {len(found):>3} PNG{flag}")
    print(f"{'total':<28} {total / 1000:>7.0f} KB" + (f"  OVER {TOTAL_LIMIT / 1e6:g} MB" if total > TOTAL_LIMIT else ""))
    twice = {h: places for h, places in seen.items() if len(places) > 1}
    for places in twice.values():
        print("stored twice:", ", ".join(places))
    print(f"PNGs stored more than once: {len(twice)}")
    return int(bad or total > TOTAL_LIMIT or bool(twice))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
