"""The wheel, the image recipe and the lock: what ships is exactly cli/, cronwarden/ and jobs/, and it runs on
its own.

An editable install hides a subpackage missing from the wheel, so the wheel is built from the
files the Containerfile copies, installed into a fresh venv and run from an empty directory.
The Containerfile cannot be built here (no container engine in the test environment), so its
structure is checked instead: two stages, the hashed lock, only the venv in the final image, a
numeric non-root user.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
CONTAINERFILE = REPO / "Containerfile"
LOCK = REPO / "requirements.lock"
BUILD_TOOLS = re.compile(r"\b(apt-get|apk|dnf|yum|gcc|g\+\+|clang|make|build-essential|[\w.-]+-dev)\b")


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile: comments dropped, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        result.append((word.upper(), " ".join(rest.split())))
        pending = ""
    return result


def _stages() -> list[list[tuple[str, str]]]:
    """The build stages, each starting with its FROM (global ARGs before the first FROM are dropped)."""
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(CONTAINERFILE.read_text(encoding="utf-8")):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _global_args() -> dict[str, str]:
    args = {}
    for word, rest in _instructions(CONTAINERFILE.read_text(encoding="utf-8")):
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value
    return args


def _copy_sources(stage: list[tuple[str, str]]) -> list[str]:
    """Sources of the stage's COPY instructions from the build context (not --from another stage)."""
    sources = []
    for word, rest in stage:
        if word == "COPY" and "--from" not in rest:
            sources.extend(part for part in rest.split()[:-1] if not part.startswith("--"))
    return sources


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for raw in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _lock_pins() -> dict[str, tuple[str, int]]:
    """Canonical name -> (pinned version, number of hashes) from requirements.lock."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = (match.group(2), 0)
        elif current and "--hash=sha256:" in line:
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def _runtime_dependencies() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(dep) for dep in project["dependencies"]]


def _job_names() -> list[str]:
    from jobs.registry import builtin_specs

    return [spec.name for spec in builtin_specs()]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of exactly what the Containerfile copies into its builder stage."""
    return _once(tmp_path_factory, "wheel", _build_wheel)


@pytest.fixture(scope="session")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel; third-party packages come from this test environment.

    The venv has no pip of its own and no system site-packages. A .pth file appends this
    environment's site-packages after the venv's own, for the dependencies only: .pth files found
    there (the editable install of the checkout) are not processed, so cli and jobs can only come
    from the wheel.
    """
    return _once(tmp_path_factory, "venv", lambda where: _install(wheel, where))


def _once(factory: pytest.TempPathFactory, name: str, make) -> Path:
    """make(folder) -> path, once for the whole run: the first worker to ask makes it, the others wait and
    reuse it (their temporary folders share a parent)."""
    from filelock import FileLock

    shared = factory.getbasetemp().parent / f"packaging-{name}"
    with FileLock(str(shared) + ".lock"):
        made = shared / "made"
        if not made.exists():
            shared.mkdir(exist_ok=True)
            made.write_text(str(make(shared)), encoding="utf-8")
    return Path(made.read_text(encoding="utf-8"))


def _build_wheel(where: Path) -> Path:
    context = where / "context"
    context.mkdir()
    for source in _copy_sources(_stages()[0]):
        target = context / source
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / source, target)
    dist = where / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(context)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (found,) = dist.glob("cronwarden-*.whl")
    return found


def _install(wheel: Path, where: Path) -> Path:
    venv = where / "cronwarden"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                          "--no-index", "--quiet", str(wheel)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n", encoding="utf-8")
    return venv


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRONWARDEN_", "PYTHON"))}
    return {**env, "NO_COLOR": "1", "CRONWARDEN_DATABASE_URL": f"sqlite:///{tmp / 'cronwarden.db'}",
            "CRONWARDEN_LOCK_DIR": str(tmp / "locks")}


@pytest.mark.slow
def test_wheel_top_level_is_exactly_cli_cronwarden_jobs_and_dist_info(wheel):
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
    assert top == {"cli", "cronwarden", "jobs", wheel.name.split("-py3")[0] + ".dist-info"}


@pytest.mark.slow
def test_wheel_holds_every_subpackage_of_the_checkout(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for package in ("cli", "cronwarden", "jobs"):
        for init in (REPO / package).rglob("__init__.py"):
            assert init.relative_to(REPO).as_posix() in names


@pytest.mark.slow
def test_installed_wheel_runs_cronwarden_help_from_an_empty_directory(installed, tmp_path):
    result = subprocess.run([str(installed / "bin" / "cronwarden"), "--help"], cwd=tmp_path,
                            env=_clean_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for job in _job_names():
        assert job in result.stdout, job


@pytest.mark.slow
def test_installed_wheel_alone_provides_cli_cronwarden_and_jobs(installed, tmp_path):
    probe = ("import json, cli, cronwarden, jobs.builtin, jobs.locks; cronwarden.JobSpec; "
             "print(json.dumps([cli.__file__, cronwarden.__file__, jobs.builtin.__file__]))")
    result = subprocess.run([str(installed / "bin" / "python"), "-c", probe], cwd=tmp_path,
                            env=_clean_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for origin in json.loads(result.stdout):
        assert Path(origin).is_relative_to(installed), origin


@pytest.mark.slow
def test_installed_wheel_creates_its_tables(installed, tmp_path):
    result = subprocess.run([str(installed / "bin" / "cronwarden"), "--quiet", "db", "upgrade"], cwd=tmp_path,
                            env=_clean_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cronwarden.db").is_file()


def test_lock_pins_every_runtime_dependency_with_hashes():
    pins = _lock_pins()
    for requirement in _runtime_dependencies():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: regenerate it (docs/deploy.md)"
        version, hashes = pins[name]
        assert hashes >= 1, f"{name}=={version} has no --hash"
        assert requirement.specifier.contains(version, prereleases=True), \
            f"requirements.lock pins {name}=={version}, pyproject wants {requirement.specifier}"
    assert all(hashes >= 1 for _, hashes in pins.values())


def test_lock_is_closed_under_the_pinned_packages_requirements():
    pins = _lock_pins()
    checked = 0
    for name, (version, _) in pins.items():
        try:
            installed = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if installed.version != version:
            continue
        checked += 1
        for line in installed.requires or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            assert canonicalize_name(requirement.name) in pins, f"{name} needs {requirement.name}, not in the lock"
    assert checked, "no pinned package is installed at its pinned version here"


def test_lock_regeneration_command_is_documented():
    header = re.search(r"^#\s+(pip-compile .+)$", LOCK.read_text(encoding="utf-8"), re.MULTILINE)
    assert header, "requirements.lock has no pip-compile header"
    assert header.group(1) in (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")


def test_containerfile_is_multi_stage_on_slim_python_311():
    stages = _stages()
    assert len(stages) == 2
    assert stages[0][0][1].endswith(" AS builder")
    image = _global_args()["PYTHON_IMAGE"]
    assert re.match(r"python:3\.11(\.\d+)?-slim", image), image
    assert all(stage[0][1].split()[0] == "${PYTHON_IMAGE}" for stage in stages)


def test_builder_installs_the_hashed_lock_as_wheels_into_its_own_venv():
    runs = " ".join(rest for word, rest in _stages()[0] if word == "RUN")
    assert "-r requirements.lock" in runs
    assert "--require-hashes" in runs
    assert "--only-binary=:all:" in runs, "wheels only: no compiler needed in any stage"
    assert "venv" in runs and "/opt/cronwarden" in runs
    assert re.search(r"install --no-deps --no-index /wheels/cronwarden-\*\.whl", runs)


def test_final_stage_copies_only_the_venv_and_no_build_tools():
    final = _stages()[-1]
    copies = [rest for word, rest in final if word in ("COPY", "ADD")]
    assert copies == ["--from=builder /opt/cronwarden /opt/cronwarden"]
    for word, rest in final:
        if word == "RUN":
            assert not BUILD_TOOLS.search(rest.replace("pip uninstall", "")), rest
    assert any(word == "RUN" and "pip uninstall" in rest and "setuptools" in rest for word, rest in final)


def test_final_stage_runs_cronwarden_as_a_numeric_non_root_user():
    final = _stages()[-1]
    words = [word for word, _ in final]
    users = [rest for word, rest in final if word == "USER"]
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or (gid.isdigit() and int(gid) > 0))
    assert words.index("USER") > max(i for i, word in enumerate(words) if word == "RUN"), "RUN after USER"
    entrypoint = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoint] == [["cronwarden"]]
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "PATH=/opt/cronwarden/bin:$PATH" in env
    assert "HOME=/tmp" in env, "the only writable place on a read-only root filesystem"


def test_build_context_holds_what_the_containerfile_copies():
    for source in _copy_sources(_stages()[0]):
        assert (REPO / source).exists(), source
        probe = source if (REPO / source).is_file() else f"{source}/__init__.py"
        assert not _dockerignore_excludes(probe), f".dockerignore drops {probe}"


@pytest.mark.parametrize("path", [".git/config", "tests/conftest.py", ".venv/bin/python", "cronwarden.db",
                                  "locks/email-queue.lock", "cronwarden.env", "k8s-cronjobs/secret.example.yaml",
                                  "cli/__pycache__/app.cpython-311.pyc", "jobs/builtin/__pycache__/x.pyc"])
def test_dockerignore_keeps_everything_else_out_of_the_build_context(path):
    assert _dockerignore_excludes(path)
