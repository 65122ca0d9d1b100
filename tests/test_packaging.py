"""Packaging: the engine's import boundary, every package listed for the wheel, conf/ shipped inside it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_import_devec_engine_pulls_only_torch_numpy_scipy():
    """`import devec.engine` (and the top-level `devec`) loads no framework or domain library."""
    code = (
        "import sys\n"
        "import numpy, scipy, scipy.linalg, torch\n"
        "before = {m.split('.')[0] for m in sys.modules}\n"
        "import devec, devec.engine\n"
        "added = {m.split('.')[0] for m in sys.modules} - before - {'devec'}\n"
        "print(','.join(sorted(m for m in added if m not in sys.stdlib_module_names)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "", f"import devec.engine also imports: {out.stdout.strip()}"


def test_every_package_is_listed_for_the_wheel():
    """A new folder of Python modules under devec/ must be added to [tool.setuptools] packages."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.relative_to(REPO).parts) for p in (REPO / "devec").rglob("*")
             if p.is_dir() and "__pycache__" not in p.parts and any(p.glob("*.py"))}
    data_only = {".".join(p.relative_to(REPO).parts) for p in (REPO / "devec").rglob("*")
                 if p.is_dir() and "__pycache__" not in p.parts and any(p.glob("*.yaml"))}
    assert found | data_only <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"


def test_conf_ships_as_devec_conf():
    """The top-level conf/ is mapped to the package devec.conf with every YAML file as package data."""
    tool = PYPROJECT["tool"]["setuptools"]
    assert tool["package-dir"]["devec.conf"] == "conf" and "devec.conf" in tool["packages"]
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["devec.conf"]
    yaml_files = list((REPO / "conf").rglob("*.yaml"))
    assert yaml_files and "**/*.yaml" in globs


def test_every_domain_has_an_extra_and_dev_installs_all():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"vision", "toxicity", "style", "all", "dev"} <= set(extras)
    assert "devec[vision,toxicity,style]" in extras["all"] and "devec[all]" in extras["dev"]
    base = " ".join(PYPROJECT["project"]["dependencies"])
    for heavy in ("open_clip", "transformers", "diffusers", "peft", "lm-eval"):
        assert heavy not in base, f"{heavy} must be in a domain extra, not a base dependency"


def test_non_editable_install_finds_its_configs(tmp_path):
    """`pip install .` (a wheel, not editable): the installed devec composes every experiment from devec/conf."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True,
                   cwd=tmp_path, capture_output=True)
    wheel = next(wheels.glob("devec-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True,
                   capture_output=True)
    code = (
        "import devec.cli as c, pathlib\n"
        "from hydra import compose, initialize_config_dir\n"
        "d = pathlib.Path(c.CONFIG_DIR)\n"
        "names = sorted(p.stem for p in (d / 'experiment').glob('*.yaml'))\n"
        "with initialize_config_dir(str(d), version_base='1.3'):\n"
        "    for n in names:\n"
        "        compose('config', overrides=[f'experiment={n}'])\n"
        "print(c.__file__); print(d); print(len(names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    module, conf, count = out.stdout.split()
    assert module.startswith(str(target)) and conf.startswith(str(target)), out.stdout
    assert int(count) == len(list((REPO / "conf" / "experiment").glob("*.yaml")))


def test_no_domain_imports_another_and_the_engine_imports_no_devec_module():
    """The layering docs/architecture.md states: engine alone, domains side by side."""
    import ast

    domains = ("vision", "style", "toxicity", "toy")
    for path in (REPO / "devec").rglob("*.py"):
        package = path.relative_to(REPO / "devec").parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in (n for n in names if n.startswith("devec.")):
                target = name.split(".")[1]
                if package == "engine":
                    assert target == "engine", f"{path}: the engine imports {name}"
                if package in domains and target in domains:
                    assert target == package, f"{path}: domain {package} imports domain {target} ({name})"
