"""The package structure holds (docs/architecture.md): one import name, layers that import
only downward, no import circles, and no generic top-level names that a stray file in the
working directory could shadow."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "igpt_codec"
FOLDERS = {PACKAGE: REPO / "codec", f"{PACKAGE}.format": REPO / "format"}
FOLDERS[f"{PACKAGE}.export"] = REPO / "export"

LAYERS = [
    ("format", [f"{PACKAGE}.format"]),
    ("core", [f"{PACKAGE}.core"]),
    ("runtime", [f"{PACKAGE}.runtime"]),
    ("pipelines", [f"{PACKAGE}.pipelines"]),
    ("api", [f"{PACKAGE}.api", PACKAGE]),
    (
        "front-ends",
        [f"{PACKAGE}.cli", f"{PACKAGE}.pillow", f"{PACKAGE}.datasets", f"{PACKAGE}.__main__"],
    ),
]
"""Lowest first. A module imports only its own layer and those below it. `igpt_codec`
itself is the public facade (lazy re-exports of the API), so it counts as the API layer."""

EXPORT_MAY_IMPORT = (f"{PACKAGE}.format", f"{PACKAGE}.core", f"{PACKAGE}.runtime")
"""export/ builds bundles for the runtime: it sees the contract and the coding core only."""

EXPORT_COMMAND = f"{PACKAGE}.cli.export_command"
"""The one run-time module allowed to import export (lazily, for `igpt-codec export`)."""


def _module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for prefix, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((prefix, *parts))] = path
    return modules


MODULES = _module_files()


def _imports(name: str, path: Path) -> set[str]:
    """Every igpt_codec module `name` imports, at any depth (lazy imports count too)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or module.startswith(prefix + ".")
            if inside and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    return None if best is None else best[0]


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if _layer(m) is None and not m.startswith(f"{PACKAGE}.export")]
    assert unplaced == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for module, targets in GRAPH.items():
        own = _layer(module)
        if own is None:
            continue
        for target in targets:
            if target.startswith(f"{PACKAGE}.export"):
                if module != EXPORT_COMMAND and not module.startswith(f"{PACKAGE}.export"):
                    upward.append(f"{module} -> {target}")
                continue
            theirs = _layer(target)
            if theirs is not None and theirs > own:
                upward.append(f"{module} ({LAYERS[own][0]}) -> {target} ({LAYERS[theirs][0]})")
    assert upward == []


def test_export_depends_on_the_contract_and_core_only() -> None:
    wrong = [
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module.startswith(f"{PACKAGE}.export")
        for target in targets
        if not target.startswith((f"{PACKAGE}.export", *EXPORT_MAY_IMPORT))
    ]
    assert wrong == []


def test_no_import_circles() -> None:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(GRAPH.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])
    assert cycles == []


def test_runtime_imports_neither_export_nor_ray_nor_torch() -> None:
    heavy = ("torch", "transformers", "optimum", "ray", "onnx")
    offenders = []
    for module, path in MODULES.items():
        if module.startswith(f"{PACKAGE}.export") or module == EXPORT_COMMAND:
            continue
        if module == f"{PACKAGE}.datasets.runner":
            continue  # the Ray runner: it imports Ray inside its functions
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            offenders += [f"{module}: {n}" for n in names if n.split(".")[0] in heavy]
    assert offenders == []


def test_a_stray_format_or_export_module_in_the_working_directory_breaks_nothing(
    tmp_path: Path,
) -> None:
    for name in ("format.py", "export.py", "codec.py", "scale.py"):
        (tmp_path / name).write_text("raise SystemExit('the stray module was imported')\n")
    code = "import igpt_codec, igpt_codec.format, igpt_codec.api; print(igpt_codec.__version__)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    cli = subprocess.run(
        [sys.executable, "-m", PACKAGE, "info", str(REPO / "tests/golden/tiny_one_24.igpt")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert "24x24" in cli.stdout + cli.stderr


def test_the_wheel_installs_one_import_name_and_the_script(tmp_path: Path) -> None:
    """`pip install` of the wheel adds the package igpt_codec, its metadata and the script
    igpt-codec, nothing else, and the installed package carries its model and spec."""
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(REPO)]
    subprocess.run(build, check=True, capture_output=True, timeout=600)
    (wheel,) = wheel_dir.glob("*.whl")
    install = [*pip, "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    entries = {p.name for p in site.iterdir()}
    dist_info = {e for e in entries if e.endswith(".dist-info")}
    assert len(dist_info) == 1
    assert entries - dist_info == {PACKAGE, "bin"}
    assert [p.name for p in (site / "bin").iterdir()] == ["igpt-codec"]
    for shipped in ("models/default/model.onnx", "format/SPEC.md", "py.typed"):
        assert (site / PACKAGE / shipped).is_file(), shipped
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert tops - dist_info == {PACKAGE}


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md gives one line per module; a new module must get its line."""
    page = (REPO / "docs" / "architecture.md").read_text()
    missing = []
    for folder in (REPO / "codec", REPO / "format", REPO / "export"):
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).as_posix()
            if path.name == "__init__.py" and path.parent != REPO / "codec":
                continue
            name = relative if folder.name == "codec" else path.name
            if f"`{name}`" not in page:
                missing.append(str(path.relative_to(REPO)))
    assert missing == []


FULL_RESOLUTION_MODULES = (
    f"{PACKAGE}.pipelines.fullres",
    f"{PACKAGE}.pipelines.classical",
    f"{PACKAGE}.pipelines.parallel",
    f"{PACKAGE}.core.mixers",
    f"{PACKAGE}.core.match",
)

_IMPORTED_AFTER = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
print(sorted(n for n in sys.modules if n in {modules!r}))
"""


def _modules_after_cli(args: list[str], cwd: Path) -> str:
    code = _IMPORTED_AFTER.format(modules=FULL_RESOLUTION_MODULES)
    from igpt_codec.cli import FULL_EXIT_VARIABLE

    env = {**os.environ, FULL_EXIT_VARIABLE: "1"}  # let runpy see the exit
    done = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "cli.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_thumbnail_commands_leave_the_full_resolution_coder_unimported(tmp_path: Path) -> None:
    """A thumbnail's compress and decompress are whole processes of about half a second,
    and the full-resolution coder's modules cost each about 6 ms to import: they are
    imported on first use. A full-resolution compress does import them (so the check sees
    the modules it names)."""
    from PIL import Image

    photo = tmp_path / "p.png"
    Image.new("RGB", (40, 30), (200, 60, 20)).save(photo)
    stream, out = tmp_path / "p.igpt", tmp_path / "out.png"
    thumbnail = ["compress", str(photo), "-o", str(stream), "--size", "8", "-q"]
    assert _modules_after_cli(thumbnail, tmp_path) == "[]"
    assert _modules_after_cli(["decompress", str(stream), "-o", str(out), "-q"], tmp_path) == "[]"
    full = ["compress", str(photo), "-o", str(tmp_path / "f.igpt"), "--full", "-q"]
    assert _modules_after_cli(full, tmp_path) == str(sorted(FULL_RESOLUTION_MODULES))
