"""Write one benchmark's measured figures into BENCHMARKS.md, replacing its previous section.

Each benchmark owns a section fenced by HTML comments, so re-running one leaves the others intact.
The file is rewritten atomically.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slsviz.environment import environment  # noqa: E402
from slsviz.storage import atomic_path  # noqa: E402

BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
_HEADER = (
    "# Benchmarks\n\n"
    "Every figure below was measured by the script named in its section, on the machine it names;\n"
    "re-run a script to replace its section. Nothing here is typed in by hand.\n"
)


def write_section(key: str, title: str, command: str, body: str, device=None) -> None:
    """Replace (or add) the section ``key`` of BENCHMARKS.md and print it."""
    env = environment(device)
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{env['cpu']} ({env['cpu_count']} cores)" + (f", GPU {env['gpu']}" if "gpu" in env else ", no GPU")
    section = (
        f"<!-- bench:{key} -->\n## {title}\n\n"
        f"Command: `{command}`  \nMeasured: {when} on {machine}; "
        f"python {env['python']}, torch {env['torch']}, timm {env['timm']}"
        + (f"; device {env['device']}" if "device" in env else "")
        + f".\n\n{body.strip()}\n<!-- /bench:{key} -->\n"
    )
    text = BENCHMARKS_MD.read_text(encoding="utf-8") if BENCHMARKS_MD.exists() else _HEADER
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->\n"
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with atomic_path(BENCHMARKS_MD) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(section)


def dumps(obj) -> str:
    """Compact JSON for a figures block."""
    return json.dumps(obj, indent=2)
