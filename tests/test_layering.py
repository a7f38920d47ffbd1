"""Rooms import downwards only (DESIGN.md): a module-level import of a higher room is a test failure.

Imports inside functions are allowed (e.g. SafeClsModel.generate reaches the engine at call time), since they
do not make the lower room depend on the higher one to import or to be tested.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "safecls"

# level of each room; a module may import rooms of its own level or below (model: foundation only)
LEVEL = {"errors": 0, "config": 0, "registry": 0, "io": 0, "_compat": 0, "_optional": 0, "resources": 0,
         "model": 1, "data": 1, "inference": 2, "train": 2, "attacks": 3, "recipe": 3, "eval": 4, "serve": 4, "demo": 5, "cli": 6}
MODEL_MAY_IMPORT = {"errors", "config", "_compat", "_optional", "model"}


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "safecls":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _top_level_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in tree.body:  # module level only
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
        elif isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks are not runtime imports
            continue
    return out


def test_rooms_import_downwards_only():
    bad = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        room = rel.parts[0].removesuffix(".py")
        if room == "__init__":
            continue
        for mod in _top_level_imports(path):
            target = _room(mod)
            if target is None or target == "__init__" or target == room:
                continue
            if room == "model" and target not in MODEL_MAY_IMPORT:
                bad.append(f"{rel}: model imports {mod}")
            elif LEVEL.get(target, 0) > LEVEL.get(room, 0):
                bad.append(f"{rel}: {room} (level {LEVEL.get(room)}) imports higher room {mod}")
    assert not bad, "\n".join(bad)
