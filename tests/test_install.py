"""scripts/install.sh into a throwaway root folder: the tree, idempotence, upgrade, uninstall.

Not covered here: the venv build with pip from the network (slow; a stub
Python stands in for it, and a real pip installs a tiny stand-in wheel from a
wheelhouse), useradd / systemd-sysusers and systemctl on a live host (--root
mode never calls them).
"""

import hashlib
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "install.sh"

STUB_PYTHON = """#!/bin/sh
# Stands in for python3 in '-m venv --system-site-packages DIR': makes a venv-shaped
# folder whose python3 is /bin/sh, and whose pip writes bin/bytelocker the way the
# real pip writes a console script: with the interpreter's path at build time in '#!'.
for last; do :; done
mkdir -p "$last/bin"
ln -s /bin/sh "$last/bin/python3"
cat > "$last/bin/pip" <<'EOF'
#!/bin/sh
bin="$(dirname "$0")"
printf '#!%s/python3\\necho bytelocker stub\\n' "$bin" > "$bin/bytelocker"
chmod +x "$bin/bytelocker"
EOF
chmod +x "$last/bin/pip"
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


def interpreter(script):
    """The program a script runs with: the one in its '#!' line or, where pip found
    the path too long for '#!', the one in its second line, '''exec' PYTHON "$0" "$@"."""
    lines = pathlib.Path(script).read_text().splitlines()
    assert lines[0].startswith("#!"), lines[0]
    if lines[0] == "#!/bin/sh" and len(lines) > 1 and lines[1].startswith("'''exec' "):
        return pathlib.Path(shlex.split(lines[1][len("'''exec' "):])[0])
    return pathlib.Path(lines[0][2:].split()[0])


def assert_runs(venv, expect="bytelocker"):
    """venv/bin/bytelocker's interpreter exists and the command runs: what the units need."""
    script = pathlib.Path(venv) / "bin/bytelocker"
    assert interpreter(script).exists(), f"{script} names {interpreter(script)}, which does not exist"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert expect in result.stdout
    return result.stdout


def venv_folders(root):
    return sorted(p.name for p in (root / "opt/bytelocker").glob("venv-*"))


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


@pytest.fixture
def stub_python(tmp_path):
    python = tmp_path / "python-stub"
    python.write_text(STUB_PYTHON)
    python.chmod(0o755)
    return python


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


def test_uninstall_removes_the_web_unit_too(root):
    # bytelocker-web.service is installed and enabled by hand (docs/dashboard.md).
    install(root, "--role", "central", "--skip-venv")
    shutil.copy(REPO / "systemd/bytelocker-web.service", root / "etc/systemd/system/")
    os.symlink("/etc/systemd/system/bytelocker-web.service",
               root / "etc/systemd/system/multi-user.target.wants/bytelocker-web.service")

    result = install(root, "--uninstall")

    assert not (root / "etc/systemd/system/bytelocker-web.service").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/bytelocker-web.service").is_symlink()
    assert "removed bytelocker-web.service" in result.stdout


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


def test_venv_from_refuses_a_venv_whose_command_does_not_run(root, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/bytelocker").write_text(f"#!{tmp_path}/gone/bin/python3\n")
    (venv / "bin/bytelocker").chmod(0o755)

    result = install(root, "--venv-from", str(venv), check=False)

    assert result.returncode == 1
    assert "does not exist" in result.stderr
    assert not (root / "opt/bytelocker/venv").is_symlink()


def test_venv_build_links_a_venv_whose_command_runs(root, stub_python):
    install(root, "--python", str(stub_python))

    venv = root / "opt/bytelocker/venv"
    assert venv.is_symlink()
    [folder] = venv_folders(root)
    assert os.readlink(venv) == folder
    # The regression: the venv was built under one name and renamed, so the '#!'
    # of its scripts named a folder that no longer existed.
    assert interpreter(venv / "bin/bytelocker").parent.parent == root / "opt/bytelocker" / folder
    assert_runs(venv)
    assert os.readlink(root / "usr/local/bin/bytelocker") == "/opt/bytelocker/venv/bin/bytelocker"
    assert not (root / "opt/bytelocker/venv.previous").exists()


def test_venv_upgrade_keeps_the_previous_venv_runnable_and_deletes_older_ones(root, stub_python):
    opt = root / "opt/bytelocker"
    install(root, "--python", str(stub_python))
    first = os.readlink(opt / "venv")
    (opt / "venv/.bytelocker-source").write_text("an older release\n")

    result = install(root, "--python", str(stub_python))

    second = os.readlink(opt / "venv")
    assert second != first
    assert "building a new venv (the sources changed)" in result.stdout
    assert os.readlink(opt / "venv.previous") == first
    assert (opt / "venv.previous/.bytelocker-source").read_text() == "an older release\n"
    assert_runs(opt / "venv.previous")
    assert_runs(opt / "venv")
    assert venv_folders(root) == sorted([first, second])

    (opt / "venv/.bytelocker-source").write_text("an older release\n")
    install(root, "--python", str(stub_python))

    third = os.readlink(opt / "venv")
    assert os.readlink(opt / "venv.previous") == second
    assert venv_folders(root) == sorted([second, third])
    assert_runs(opt / "venv.previous")


def test_venv_rerun_rebuilds_a_venv_whose_command_does_not_run(root, stub_python):
    opt = root / "opt/bytelocker"
    install(root, "--python", str(stub_python))
    (opt / "venv/.bytelocker-source").write_text("an older release\n")
    install(root, "--python", str(stub_python))
    working_previous = os.readlink(opt / "venv.previous")
    broken = os.readlink(opt / "venv")
    (opt / "venv/bin/python3").unlink()

    result = install(root, "--python", str(stub_python))

    assert "the venv is up to date" not in result.stdout
    assert "does not run" in result.stdout
    assert os.readlink(opt / "venv") != broken
    assert_runs(opt / "venv")
    # The broken one is no rollback target; the working one stays.
    assert os.readlink(opt / "venv.previous") == working_previous
    assert broken not in venv_folders(root)


def test_venv_upgrade_replaces_the_venv_folder_of_the_older_installer(root, stub_python):
    # The older installer built venv.new, renamed it to venv, and kept the one
    # before as venv.previous: their scripts name .../venv.new/bin/python3.
    opt = root / "opt/bytelocker"
    for name in ("venv", "venv.previous"):
        (opt / name / "bin").mkdir(parents=True)
        (opt / name / "bin/bytelocker").write_text(f"#!{opt}/venv.new/bin/python3\n")
        (opt / name / "bin/bytelocker").chmod(0o755)
        (opt / name / ".bytelocker-source").write_text("an older release\n")

    result = install(root, "--python", str(stub_python))

    assert "does not run" in result.stdout
    assert (opt / "venv").is_symlink()
    assert_runs(opt / "venv")
    assert not (opt / "venv.previous").exists() and not (opt / "venv.previous").is_symlink()
    assert not (opt / "venv.new").exists()
    assert sorted(p.name for p in opt.iterdir()) == ["venv", *venv_folders(root)]


def test_venv_failed_build_leaves_the_current_venv_alone(root, stub_python, tmp_path):
    opt = root / "opt/bytelocker"
    install(root, "--python", str(stub_python))
    current = os.readlink(opt / "venv")
    (opt / "venv/.bytelocker-source").write_text("an older release\n")
    failing = tmp_path / "python-failing"
    failing.write_text(STUB_PYTHON.replace('cat > "$last/bin/pip"', 'cat > /dev/null') +
                       'printf "#!/bin/sh\\nexit 1\\n" > "$last/bin/pip"; chmod +x "$last/bin/pip"\n')
    failing.chmod(0o755)

    result = install(root, "--python", str(failing), check=False)

    assert result.returncode != 0
    assert os.readlink(opt / "venv") == current
    assert venv_folders(root) == [current]
    assert_runs(opt / "venv")


def test_venv_build_is_skipped_when_the_source_has_not_changed(root, stub_python):
    install(root, "--python", str(stub_python))
    before = snapshot(root)

    result = install(root, "--python", str(stub_python))

    assert "the venv is up to date" in result.stdout
    assert snapshot(root) == before


def make_wheel(folder, version):
    """A stand-in bytelocker wheel: no dependencies, a 'bytelocker' console script printing its version."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"bytelocker-{version}.dist-info"
    files = {
        "bytelocker/__init__.py": f"def main():\n    print('bytelocker {version}')\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: bytelocker\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": "[console_scripts]\nbytelocker = bytelocker:main\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"bytelocker-{version}-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)


def make_board_library_wheel(folder):
    """A stand-in for Jetson.GPIO, which staff pip-install by hand on a Jetson."""
    folder.mkdir(parents=True, exist_ok=True)
    info = "jetson_gpio-2.1.0.dist-info"
    files = {
        "Jetson/__init__.py": "",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: Jetson.GPIO\nVersion: 2.1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / "jetson_gpio-2.1.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)


needs_ensurepip = pytest.mark.skipif(subprocess.run([sys.executable, "-c", "import ensurepip"]).returncode != 0,
                                     reason="this Python cannot make venvs with pip (no ensurepip)")


@needs_ensurepip
def test_an_upgrade_keeps_the_board_library_installed_by_hand(root, tmp_path):
    opt = root / "opt/bytelocker"
    wheelhouse = tmp_path / "wheelhouse"
    make_wheel(wheelhouse, "1.0")
    make_board_library_wheel(wheelhouse)
    install(root, "--wheelhouse", str(wheelhouse), "--python", sys.executable)
    # The Jetson steps of docs/deployment.md: pip install Jetson.GPIO into the venv.
    subprocess.run([str(opt / "venv/bin/pip"), "install", "--quiet", "--no-index", "--find-links",
                    str(wheelhouse), "Jetson.GPIO"], check=True)
    make_wheel(wheelhouse, "2.0")
    (opt / "venv/.bytelocker-source").write_text("an older release\n")

    result = install(root, "--wheelhouse", str(wheelhouse), "--python", sys.executable)

    assert_runs(opt / "venv", "bytelocker 2.0")
    assert "carried Jetson.GPIO over" in result.stdout + result.stderr
    subprocess.run([str(opt / "venv/bin/python"), "-c", "import Jetson"], check=True)


@needs_ensurepip
def test_real_pip_venv_runs_after_install_upgrade_and_rollback(root, tmp_path):
    # The real thing, offline: python -m venv, then pip from a wheelhouse.
    opt = root / "opt/bytelocker"
    wheelhouse = tmp_path / "wheelhouse"
    make_wheel(wheelhouse, "1.0")
    install(root, "--wheelhouse", str(wheelhouse), "--python", sys.executable)

    assert_runs(opt / "venv", "bytelocker 1.0")
    assert interpreter(opt / "venv/bin/bytelocker").parent.parent == opt / os.readlink(opt / "venv")

    make_wheel(wheelhouse, "2.0")
    (opt / "venv/.bytelocker-source").write_text("an older release\n")
    install(root, "--wheelhouse", str(wheelhouse), "--python", sys.executable)

    assert_runs(opt / "venv", "bytelocker 2.0")
    assert_runs(opt / "venv.previous", "bytelocker 1.0")

    # The rollback in docs/deployment.md.
    subprocess.run(["sh", "-ec", 'ln -sfn "$(readlink venv.previous)" venv.tmp && mv -T venv.tmp venv'],
                   cwd=opt, check=True)

    assert_runs(opt / "venv", "bytelocker 1.0")


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
