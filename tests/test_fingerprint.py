"""The fingerprint's git sha is robofleet's own: an installed copy inside another repository records none."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from robofleet.platform import fingerprint

REPO = Path(__file__).resolve().parent.parent
GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")


def _git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([GIT, *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def _other_repository(root: Path, pyproject: str | None = None) -> str:
    """A git repository of another project with one commit; returns its sha."""
    root.mkdir(parents=True)
    _git(root, "init", "-q")
    (root / "README").write_text("another project\n")
    if pyproject is not None:
        (root / "pyproject.toml").write_text(pyproject)
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "other")
    return _git(root, "rev-parse", "HEAD")


def test_an_installed_copy_inside_another_repository_records_no_git_sha(tmp_path):
    """After a non-editable install fingerprint.py lives in <site-packages>/robofleet/platform/; a
    virtualenv inside another project's checkout must not record that project's commit as ours."""
    other = tmp_path / "other-project"
    other_sha = _other_repository(other)
    installed = other / ".venv" / "lib" / "python3.11" / "site-packages" / "robofleet" / "platform"
    installed.mkdir(parents=True)
    shutil.copy(REPO / "platform" / "fingerprint.py", installed / "fingerprint.py")
    spec = importlib.util.spec_from_file_location("installed_fingerprint", installed / "fingerprint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    assert module.REPO_ROOT == installed.parent.resolve()
    assert _git(module.REPO_ROOT, "rev-parse", "HEAD") == other_sha, "git alone would answer for the other project"
    assert module.git_sha() is None
    assert module.fingerprint()["git_sha"] is None
    assert module.robofleet_checkout() is None


def test_only_a_robofleet_source_tree_is_asked_for_its_sha(tmp_path):
    assert fingerprint.git_sha(tmp_path / "missing") is None
    other = tmp_path / "other"
    _other_repository(other, pyproject='[project]\nname = "not-robofleet"\n')
    assert fingerprint.git_sha(other) is None and fingerprint.robofleet_checkout(other) is None
    broken = tmp_path / "broken"
    _other_repository(broken, pyproject="[project\n")
    assert fingerprint.git_sha(broken) is None

    ours = tmp_path / "ours"
    sha = _other_repository(ours, pyproject='[project]\nname = "robofleet"\n')
    assert fingerprint.robofleet_checkout(ours) == ours
    assert fingerprint.git_sha(ours) == sha
    (ours / "README").write_text("changed\n")
    assert fingerprint.git_sha(ours) == sha + "-dirty"


def test_this_checkout_is_robofleets():
    if subprocess.run([GIT, "rev-parse", "HEAD"], cwd=REPO, capture_output=True).returncode != 0:
        pytest.skip("this copy of robofleet is not a git checkout")
    assert fingerprint.robofleet_checkout() == REPO
    assert fingerprint.git_sha() is not None
