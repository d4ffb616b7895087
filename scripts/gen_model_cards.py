"""Write MODEL_CARDS.md from the registry: python scripts/gen_model_cards.py [--check]."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segzoo.cards import render_model_cards  # noqa: E402


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render_model_cards()
    path = ROOT / "MODEL_CARDS.md"
    if "--check" in argv:
        if not path.exists() or path.read_text() != text:
            print("MODEL_CARDS.md is out of date: run python scripts/gen_model_cards.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
