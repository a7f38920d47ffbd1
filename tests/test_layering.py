"""Rooms import downwards only (DESIGN.md): an import of a higher room, at module level or inside a function, is a
test failure. The one exception is documented where it is made: `SafeClsModel.generate` reaches the engine at call
time, a convenience for users of the model room (the engine itself is a room above)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "safecls"

# level of each room; a module may import rooms of its own level or below (model: foundation only)
LEVEL = {"errors": 0, "config": 0, "registry": 0, "io": 0, "_compat": 0, "_optional": 0, "resources": 0, "version": 0,
         "model": 1, "data": 1, "inference": 2, "train": 2, "attacks": 3, "recipe": 3, "eval": 4, "serve": 4,
         "demo": 5, "study": 5, "cli": 6}
MODEL_MAY_IMPORT = {"errors", "config", "_compat", "_optional", "version", "model"}
ALLOWED_UPWARD = {("model/safecls_model.py", "safecls.inference.config"),
                  ("model/safecls_model.py", "safecls.inference.engine")}


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "safecls":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every import of the module, wherever it sits, but for `if TYPE_CHECKING:` blocks (not runtime imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def _walk() -> tuple[list[str], dict[str, set[str]]]:
    """(violations, {room: rooms it imports})."""
    bad = []
    rooms: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        room = rel.parts[0].removesuffix(".py")
        if room == "__init__":
            continue
        assert room in LEVEL, f"{rel}: room {room!r} has no level in this test: give it one (DESIGN.md's order)"
        for line, mod in _imports(path):
            target = _room(mod)
            if target is None or target == room:
                continue
            rooms.setdefault(room, set()).add(target)
            if (rel.as_posix(), mod) in ALLOWED_UPWARD:
                continue
            if target == "__init__":
                bad.append(f"{rel}:{line}: imports the package root (import from the room that defines the name)")
            elif room == "model" and target not in MODEL_MAY_IMPORT:
                bad.append(f"{rel}:{line}: model imports {mod}")
            elif LEVEL.get(target, 0) > LEVEL[room]:
                bad.append(f"{rel}:{line}: {room} (level {LEVEL[room]}) imports higher room {mod}")
    return bad, rooms


def test_rooms_import_downwards_only():
    bad, _ = _walk()
    assert not bad, "\n".join(bad)


if __name__ == "__main__":  # python tests/test_layering.py: the rooms and the arrows between them
    for room, targets in sorted(_walk()[1].items(), key=lambda kv: (LEVEL[kv[0]], kv[0])):
        print(f"{room} (level {LEVEL[room]}) -> {', '.join(sorted(targets, key=lambda r: (LEVEL.get(r, 0), r)))}")  # noqa: T201
