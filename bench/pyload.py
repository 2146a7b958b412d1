"""The Python baseline of the status benchmark: a plain script that json.loads every
cell.json and every agents/*.json under a missions root (what a hand-written monitoring
script would do), and prints how many agents it loaded. Run as its own process:

    python3 bench/pyload.py ROOT
"""

import json
import os
import sys


def main(root: str) -> int:
    agents = 0
    with os.scandir(root) as cells:
        for cell in cells:
            if not cell.is_dir(follow_symlinks=False) or cell.name.startswith("."):
                continue
            try:
                with open(os.path.join(cell.path, "cell.json"), "rb") as f:
                    json.loads(f.read())
            except FileNotFoundError:
                continue
            with os.scandir(os.path.join(cell.path, "agents")) as entries:
                for entry in entries:
                    if entry.name.endswith(".json") and not entry.name.startswith("."):
                        with open(entry.path, "rb") as f:
                            json.loads(f.read())
                        agents += 1
    print(agents)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
