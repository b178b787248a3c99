"""scripts/install.sh into a throwaway root folder: the tree, idempotence, upgrade, uninstall.

Not covered here: the real venv build with pip (slow, needs the network; a
stub Python stands in for it so the swap logic still runs), useradd /
systemd-sysusers and systemctl on a live host (--root mode never calls them).
"""

import hashlib
import os
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "install.sh"

STUB_PYTHON = """#!/bin/sh
# Stands in for python3 in '-m venv --system-site-packages DIR': makes a venv-shaped folder.
for last; do :; done
mkdir -p "$last/bin"
printf '#!/bin/sh\\nexit 0\\n' > "$last/bin/pip"
printf '#!/bin/sh\\necho bytelocker stub\\n' > "$last/bin/bytelocker"
chmod +x "$last/bin/pip" "$last/bin/bytelocker"
"""


def install(root, *args, check=True):
    result = subprocess.run(["bash", str(SCRIPT), "--root", str(root), *args],
                            capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def snapshot(root):
    """path -> (kind, mode, content hash or link target, mtime) for every entry under root."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = pathlib.Path(dirpath, name)
            info = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path), info.st_mtime_ns)
            elif path.is_dir():
                found[rel] = ("dir", oct(info.st_mode & 0o7777), info.st_mtime_ns)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = ("file", oct(info.st_mode & 0o7777), digest, info.st_mtime_ns)
    return found


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


def test_install_writes_the_expected_tree(root):
    install(root, "--role", "both", "--skip-venv")

    assert (root / "etc/bytelocker/door.yaml").read_text() == (REPO / "config/door.example.yaml").read_text()
    assert (root / "etc/bytelocker/central.yaml").read_text() == \
        (REPO / "config/central.example.yaml").read_text()
    assert (root / "etc/bytelocker/door.example.yaml").is_file()
    assert oct((root / "etc/bytelocker/credentials").stat().st_mode & 0o777) == "0o700"
    assert oct((root / "var/lib/bytelocker").stat().st_mode & 0o777) == "0o750"
    for unit in ("bytelocker-door.service", "bytelocker-central.service"):
        assert (root / "etc/systemd/system" / unit).read_text() == (REPO / "systemd" / unit).read_text()
        assert os.readlink(root / "etc/systemd/system/multi-user.target.wants" / unit) == \
            f"/etc/systemd/system/{unit}"
    assert os.readlink(root / "usr/local/bin/bytelocker") == "/opt/bytelocker/venv/bin/bytelocker"


def test_install_declares_the_user_and_groups_for_sysusers(root):
    install(root, "--skip-venv")

    sysusers = (root / "usr/lib/sysusers.d/bytelocker.conf").read_text()
    assert "u bytelocker - " in sysusers and "g gpio -" in sysusers and "g video -" in sysusers
    tmpfiles = (root / "usr/lib/tmpfiles.d/bytelocker.conf").read_text()
    assert "d /etc/bytelocker/credentials 0700 root root -" in tmpfiles


def test_door_role_installs_only_the_door(root):
    install(root, "--skip-venv")

    assert (root / "etc/systemd/system/bytelocker-door.service").is_file()
    assert not (root / "etc/systemd/system/bytelocker-central.service").exists()
    assert not (root / "etc/bytelocker/central.yaml").exists()


def test_second_run_changes_nothing(root):
    install(root, "--role", "both", "--skip-venv")
    before = snapshot(root)

    result = install(root, "--role", "both", "--skip-venv")

    assert snapshot(root) == before
    assert "wrote" not in result.stdout and "linked" not in result.stdout


def test_upgrade_keeps_edited_config_and_data(root):
    install(root, "--skip-venv")
    edited = "version: 2\ndoor:\n  id: lobby\n"
    (root / "etc/bytelocker/door.yaml").write_text(edited)
    (root / "var/lib/bytelocker/outbox.db").write_bytes(b"events")
    (root / "etc/bytelocker/door.example.yaml").write_text("# old example\n")

    install(root, "--skip-venv")

    assert (root / "etc/bytelocker/door.yaml").read_text() == edited
    assert (root / "var/lib/bytelocker/outbox.db").read_bytes() == b"events"
    assert (root / "etc/bytelocker/door.example.yaml").read_text() == \
        (REPO / "config/door.example.yaml").read_text()


def test_upgrade_restores_a_unit_file_edited_in_place(root):
    install(root, "--skip-venv")
    unit = root / "etc/systemd/system/bytelocker-door.service"
    unit.write_text("[Service]\nExecStart=/bin/false\n")

    install(root, "--skip-venv")

    assert unit.read_text() == (REPO / "systemd/bytelocker-door.service").read_text()


def test_uninstall_keeps_config_and_data(root):
    install(root, "--skip-venv")
    (root / "var/lib/bytelocker/outbox.db").write_bytes(b"events")

    install(root, "--uninstall")

    assert not (root / "etc/systemd/system/bytelocker-door.service").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/bytelocker-door.service").is_symlink()
    assert not (root / "usr/local/bin/bytelocker").is_symlink()
    assert (root / "etc/bytelocker/door.yaml").is_file()
    assert (root / "var/lib/bytelocker/outbox.db").read_bytes() == b"events"


def test_uninstall_purge_removes_config_and_data(root):
    install(root, "--skip-venv")

    install(root, "--uninstall", "--purge")

    assert not (root / "etc/bytelocker").exists()
    assert not (root / "var/lib/bytelocker").exists()
    assert not (root / "usr/lib/sysusers.d/bytelocker.conf").exists()


def test_venv_from_links_an_existing_venv(root, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/bytelocker").write_text("#!/bin/sh\n")
    (venv / "bin/bytelocker").chmod(0o755)

    install(root, "--venv-from", str(venv))

    assert os.readlink(root / "opt/bytelocker/venv") == str(venv)


def test_venv_build_swaps_in_a_new_venv_and_keeps_the_previous(root, tmp_path):
    python = tmp_path / "python-stub"
    python.write_text(STUB_PYTHON)
    python.chmod(0o755)
    old = root / "opt/bytelocker/venv"
    (old / "bin").mkdir(parents=True)
    (old / "bin/bytelocker").write_text("#!/bin/sh\n")
    (old / "bin/bytelocker").chmod(0o755)
    (old / ".bytelocker-source").write_text("an older release\n")

    install(root, "--python", str(python))

    assert (root / "opt/bytelocker/venv.previous/.bytelocker-source").read_text() == "an older release\n"
    assert (root / "opt/bytelocker/venv/.bytelocker-source").read_text().strip() != "an older release"
    assert not (root / "opt/bytelocker/venv.new").exists()


def test_venv_build_is_skipped_when_the_source_has_not_changed(root, tmp_path):
    python = tmp_path / "python-stub"
    python.write_text(STUB_PYTHON)
    python.chmod(0o755)
    install(root, "--python", str(python))
    before = snapshot(root)

    result = install(root, "--python", str(python))

    assert "the venv is up to date" in result.stdout
    assert snapshot(root) == before


def test_unknown_option_is_refused(root):
    result = install(root, "--frobnicate", check=False)

    assert result.returncode == 1
    assert "unknown option '--frobnicate'" in result.stderr


def test_purge_without_uninstall_is_refused(root):
    result = install(root, "--purge", check=False)

    assert result.returncode == 1


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_installed_tree_passes_systemd_analyze_verify(root):
    # The tree needs the host's own units (the targets) and a program where the units expect it.
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    stub = root / "opt/bytelocker/venv/bin/bytelocker"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    install(root, "--role", "both", "--skip-venv")

    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}",
                             "bytelocker-door.service", "bytelocker-central.service"],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
