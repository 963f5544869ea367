"""The package's layers (README "Layout"): imports point downwards, the library never reaches into the recipes, the
Space, the benchmarks or the tests, and `import sam_hf` loads only what its model, processor and registration need."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sam_hf

PACKAGE = Path(sam_hf.__file__).parent
BASE = {"configuration_sam", "geometry", "prompts", "processing", "data"}
MODEL = {"modeling"}
# What each layer may import from the package (its own layer included); tasks and faces may import anything below.
ALLOWED = {
    **dict.fromkeys(BASE, BASE),
    "modeling": BASE | MODEL,
    "conversion": BASE | MODEL | {"conversion"},
}
OUTSIDE = {"recipes", "space", "benchmarks", "tests"}
# Heavy packages that only some features need: imported when those features are used.
LAZY = ("open_clip", "gradio", "onnx", "onnxruntime", "cv2", "av", "ray")


def package_imports(path: Path) -> set[str]:
    """Top-level names this module imports: `sam_hf.<name>` for the package's own modules, else the package name."""
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parent = module[: len(module) - node.level]
                target = [*parent, *(node.module.split(".") if node.module else [])]
                if len(target) == 1:  # `from . import x` at the top of the package
                    names.update(f"sam_hf.{alias.name}" for alias in node.names)
                else:
                    names.add(".".join(target[:2]))
            else:
                names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
    return names


def layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downwards(path: Path) -> None:
    imports = package_imports(path)
    assert not imports & OUTSIDE, f"the library imports {sorted(imports & OUTSIDE)}"
    allowed = ALLOWED.get(layer(path))
    if allowed is not None:
        own = {name.removeprefix("sam_hf.") for name in imports if name.startswith("sam_hf.")}
        assert own <= allowed, f"{layer(path)} imports {sorted(own - allowed)} from a higher layer"


def test_the_checker_sees_relative_imports() -> None:
    """The checker resolves relative imports, so the rule above can fail."""
    module = PACKAGE / "modeling" / "mask_decoder.py"
    imports = package_imports(module)
    assert "sam_hf.configuration_sam" in imports and "sam_hf.modeling" in imports
    assert "sam_hf.predictor" in package_imports(PACKAGE / "pipelines.py")


def test_import_sam_hf_loads_no_optional_heavy_package() -> None:
    code = f"import sys, sam_hf; print(sorted(m for m in {LAZY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def undocumented_names(path: Path) -> list[str]:
    """Public classes and functions of a module (recursively inside classes) without a docstring, as
    `path:line name`."""
    missing = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or child.name[0] == "_":
                continue
            if ast.get_docstring(child) is None:
                missing.append(f"{path.relative_to(PACKAGE)}:{child.lineno} {prefix}{child.name}")
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text()), "")
    return missing


def test_every_public_name_has_a_docstring() -> None:
    missing = [name for path in sorted(PACKAGE.rglob("*.py")) for name in undocumented_names(path)]
    assert not missing, f"{len(missing)} public names lack a docstring:\n" + "\n".join(missing)
