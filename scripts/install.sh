#!/usr/bin/env bash
# Install, upgrade or remove ByteLocker on this machine (or into a folder tree).
#
#   sudo scripts/install.sh [--role door|central|both]      install or upgrade
#   sudo scripts/install.sh --uninstall [--purge]           remove
#   scripts/install.sh --root DIR ...                        write into DIR instead of /
#
# What it does (every step is skipped when already done, so running it again
# changes nothing, and running it after 'git pull' is the upgrade):
#   * the system user 'bytelocker' (and the groups gpio, video) via sysusers.d;
#   * /opt/bytelocker/venv: a link to the Python venv with ByteLocker in it,
#     /opt/bytelocker/venv-<date>-<source id>.  An upgrade builds a new venv
#     folder and switches the link to it in one rename; the venv it replaced
#     stays, linked as venv.previous, for a rollback, and older ones are
#     deleted.  A venv is never moved: pip writes its path into its scripts.
#     A run also rebuilds a venv whose 'bytelocker' command does not run;
#   * /etc/bytelocker/{door,central}.yaml from the examples, only if missing:
#     edited files are never touched (the current examples go next to them as
#     *.example.yaml); /etc/bytelocker/credentials/ (root, 0700) for secrets;
#   * /var/lib/bytelocker (the service's data, kept on upgrade and uninstall);
#   * the systemd units, enabled; running units are restarted on upgrade
#     (bytelocker-web.service too, if it was installed by hand and is running).
#
# Options:
#   --role R          door (default), central or both
#   --root DIR        write into the tree DIR (image building, tests): no
#                     useradd, no systemctl; users come from the sysusers.d file
#                     and folders from the tmpfiles.d file at first boot
#   --skip-venv       leave /opt/bytelocker/venv alone (tests; or manage it yourself)
#   --venv-from DIR   use an existing venv: /opt/bytelocker/venv becomes a link to DIR
#   --wheelhouse DIR  install from the wheels in DIR only (offline sites)
#   --python PY       the Python to build the venv with (default python3)
#   --start           start (or restart) the units now, not only at boot
#   --uninstall       remove the program, the units (web too) and the links; keep config and data
#   --purge           with --uninstall: also remove /etc/bytelocker, /var/lib/bytelocker and the user
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT=""
ROLE="door"
# Installed by hand into the venv on some boards; an upgrade installs them into the new venv too.
CARRIED_OVER="Jetson.GPIO"
VENV_MODE="build"
VENV_FROM=""
WHEELHOUSE=""
PYTHON="python3"
START=0
UNINSTALL=0
PURGE=0

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="${2:?--root needs a folder}"; shift 2 ;;
        --role) ROLE="${2:?--role needs door, central or both}"; shift 2 ;;
        --skip-venv) VENV_MODE="skip"; shift ;;
        --venv-from) VENV_MODE="link"; VENV_FROM="${2:?--venv-from needs a folder}"; shift 2 ;;
        --wheelhouse) WHEELHOUSE="${2:?--wheelhouse needs a folder}"; shift 2 ;;
        --python) PYTHON="${2:?--python needs a program}"; shift 2 ;;
        --start) START=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

case "$ROLE" in
    door) UNITS=(bytelocker-door.service); CONFIGS=(door) ;;
    central) UNITS=(bytelocker-central.service); CONFIGS=(central) ;;
    both) UNITS=(bytelocker-door.service bytelocker-central.service); CONFIGS=(door central) ;;
    *) die "--role must be door, central or both, not '$ROLE'" ;;
esac
[ "$PURGE" -eq 0 ] || [ "$UNINSTALL" -eq 1 ] || die "--purge only goes with --uninstall"

if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT="$(cd "$ROOT" && pwd)"
    [ "$ROOT" != "/" ] || ROOT=""
fi
LIVE=0
[ -n "$ROOT" ] || LIVE=1
if [ "$LIVE" -eq 1 ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo), or give --root DIR to write into a folder"
fi

OPT="$ROOT/opt/bytelocker"
ETC="$ROOT/etc/bytelocker"
STATE="$ROOT/var/lib/bytelocker"
UNITDIR="$ROOT/etc/systemd/system"
WANTS="$UNITDIR/multi-user.target.wants"
SYSUSERS="$ROOT/usr/lib/sysusers.d/bytelocker.conf"
TMPFILES="$ROOT/usr/lib/tmpfiles.d/bytelocker.conf"
LINK="$ROOT/usr/local/bin/bytelocker"

# -- small idempotent steps -----------------------------------------------------

# put_file SRC DEST MODE: copy only if the content or mode differs.
put_file() {
    local src="$1" dest="$2" mode="$3"
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        [ "$(stat -c %a "$dest")" = "$mode" ] || chmod "$mode" "$dest"
        return 1
    fi
    mkdir -p "$(dirname "$dest")"
    install -m "$mode" "$src" "$dest"
    say "wrote ${dest#"$ROOT"}"
    return 0
}

# put_text DEST MODE <<< TEXT
put_text() {
    local dest="$1" mode="$2" tmp
    tmp="$(mktemp)"
    cat > "$tmp"
    local rc=0
    put_file "$tmp" "$dest" "$mode" || rc=$?
    rm -f "$tmp"
    return $rc
}

# put_dir DIR MODE
put_dir() {
    if [ ! -d "$1" ]; then
        mkdir -p "$1"
        say "created ${1#"$ROOT"}"
    fi
    [ "$(stat -c %a "$1")" = "$2" ] || chmod "$2" "$1"
}

# put_link TARGET LINK
put_link() {
    if [ -L "$2" ] && [ "$(readlink "$2")" = "$1" ]; then
        return 1
    fi
    mkdir -p "$(dirname "$2")"
    ln -sfn "$1" "$2"
    say "linked ${2#"$ROOT"} -> $1"
}

# venv_problem DIR: print why DIR/bin/bytelocker does not run; print nothing if it does.
# pip writes the interpreter's path, as it was when the venv was built, into
# the '#!' line of each script, so a venv that was moved or whose Python was
# removed fails here.
venv_problem() {
    local script="$1/bin/bytelocker" interp
    if [ ! -f "$script" ] || [ ! -x "$script" ]; then
        echo "${script#"$ROOT"} is missing or not executable"; return 0
    fi
    interp="$(head -n 1 "$script" | sed -n 's/^#![[:space:]]*\([^[:space:]]*\).*/\1/p')"
    if [ -z "$interp" ] || [ ! -x "$interp" ]; then
        echo "the interpreter '${interp:-?}' named by ${script#"$ROOT"} does not exist"; return 0
    fi
    "$script" --version >/dev/null 2>&1 || echo "'${script#"$ROOT"} --version' fails"
}

# venv_path TARGET: a link target under $OPT (relative, as written here) or an absolute one.
venv_path() {
    case "$1" in /*) echo "$1" ;; *) echo "$OPT/$1" ;; esac
}

# put_venv_link NAME TARGET: point $OPT/NAME at TARGET with one rename, so that
# no unit ever finds the link missing or half-written.
put_venv_link() {
    ln -sfn "$2" "$OPT/$1.tmp"
    mv -T "$OPT/$1.tmp" "$OPT/$1"
}

# switch_venv TARGET: make /opt/bytelocker/venv point at TARGET (a folder name
# in $OPT, or an absolute path); keep the venv it pointed at, if that one runs,
# as venv.previous (else keep the venv.previous there was, if it runs), and
# delete the other venv-* folders.
switch_venv() {
    local target="$1" old="" prev="" legacy="" dir
    if [ -L "$OPT/venv" ] && [ "$(readlink "$OPT/venv")" = "$target" ]; then
        return 0
    fi
    if [ -L "$OPT/venv" ]; then
        old="$(readlink "$OPT/venv")"
        [ -z "$(venv_problem "$(venv_path "$old")")" ] || old=""
    fi
    prev="$old"
    if [ -z "$prev" ] && [ -L "$OPT/venv.previous" ]; then
        prev="$(readlink "$OPT/venv.previous")"
        [ "$prev" != "$target" ] && [ -z "$(venv_problem "$(venv_path "$prev")")" ] || prev=""
    fi
    mkdir -p "$OPT"
    if [ -d "$OPT/venv" ] && [ ! -L "$OPT/venv" ]; then
        # A venv folder from an older installer.  Its scripts name the folder
        # it was built in (/opt/bytelocker/venv.new), so it cannot run, nor be
        # rolled back to (nor could it be moved and still run); it must go
        # before the link can take its name.
        legacy="$OPT/venv.legacy.$$"
        mv -T "$OPT/venv" "$legacy"
    fi
    put_venv_link venv "$target"
    say "linked ${OPT#"$ROOT"}/venv -> $target"
    if [ -n "$legacy" ]; then
        rm -rf "$legacy"
        say "removed the venv folder ${OPT#"$ROOT"}/venv of an older installer (a venv cannot be moved: its scripts name its path)"
    fi
    [ ! -d "$OPT/venv.new" ] || rm -rf "$OPT/venv.new"
    if [ -d "$OPT/venv.previous" ] && [ ! -L "$OPT/venv.previous" ]; then
        rm -rf "$OPT/venv.previous"     # an older installer's: its scripts could not run either
    fi
    if [ -n "$prev" ]; then
        put_venv_link venv.previous "$prev"
        say "kept the previous venv for a rollback: ${OPT#"$ROOT"}/venv.previous -> $prev"
    else
        rm -f "$OPT/venv.previous"
    fi
    for dir in "$OPT"/venv-*; do
        [ -d "$dir" ] && [ ! -L "$dir" ] || continue
        [ "$dir" != "$(venv_path "$target")" ] && { [ -z "$prev" ] || [ "$dir" != "$(venv_path "$prev")" ]; } || continue
        rm -rf "$dir"
        say "removed the old venv ${dir#"$ROOT"}"
    done
}

source_id() {
    # What the venv was built from: the package sources and their declared dependencies.
    (cd "$SRC" && find bytelocker edge central hardware config setup.cfg pyproject.toml \
        -type f \( -name '*.py' -o -name '*.yaml' -o -name '*.cfg' -o -name '*.toml' -o -name '*.conf' \) \
        -not -path '*/__pycache__/*' -print0 2>/dev/null | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

systemctl_live() {
    [ "$LIVE" -eq 1 ] || return 0
    command -v systemctl >/dev/null 2>&1 || { say "no systemctl here; skipped: systemctl $*"; return 0; }
    systemctl "$@"
}

# -- uninstall --------------------------------------------------------------------

if [ "$UNINSTALL" -eq 1 ]; then
    # bytelocker-web.service is installed by hand (docs/dashboard.md), but removed here too.
    for unit in bytelocker-door.service bytelocker-central.service bytelocker-web.service; do
        if [ -f "$UNITDIR/$unit" ] || [ -L "$WANTS/$unit" ]; then
            systemctl_live disable --now "$unit" || true
            rm -f "$WANTS/$unit" "$UNITDIR/$unit"
            say "removed $unit"
        fi
    done
    systemctl_live daemon-reload
    rm -rf "$OPT"
    [ ! -L "$LINK" ] || rm -f "$LINK"
    if [ "$PURGE" -eq 1 ]; then
        rm -rf "$ETC" "$STATE" "$SYSUSERS" "$TMPFILES"
        if [ "$LIVE" -eq 1 ] && getent passwd bytelocker >/dev/null; then
            userdel bytelocker || say "could not remove the user bytelocker; remove it by hand"
        fi
        say "removed ByteLocker, its config, its data and its user"
    else
        say "removed ByteLocker; kept ${ETC#"$ROOT"} and ${STATE#"$ROOT"} (use --purge to remove them)"
    fi
    exit 0
fi

# -- install or upgrade -------------------------------------------------------------

[ -f "$SRC/setup.cfg" ] && [ -d "$SRC/systemd" ] || die "run this from a ByteLocker source tree ($SRC)"

# The user, and the groups the door's devices belong to on Raspberry Pi OS and
# JetPack (SupplementaryGroups= in the unit fails if they do not exist).
put_text "$SYSUSERS" 644 <<'EOF' || true
# ByteLocker's service user; see systemd-sysusers(8).
g gpio -
g video -
u bytelocker - "ByteLocker door system" /var/lib/bytelocker /usr/sbin/nologin
EOF
put_text "$TMPFILES" 644 <<'EOF' || true
# ByteLocker folders; see tmpfiles.d(5).  The units' StateDirectory= also makes the data folder.
d /etc/bytelocker 0755 root root -
d /etc/bytelocker/credentials 0700 root root -
d /var/lib/bytelocker 0750 bytelocker bytelocker -
EOF
if [ "$LIVE" -eq 1 ]; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers "$SYSUSERS"
    elif ! getent passwd bytelocker >/dev/null; then
        getent group gpio >/dev/null || groupadd --system gpio
        getent group video >/dev/null || groupadd --system video
        useradd --system --user-group --home-dir /var/lib/bytelocker --no-create-home \
            --shell /usr/sbin/nologin bytelocker
    fi
fi

put_dir "$ETC" 755
put_dir "$ETC/credentials" 700
put_dir "$STATE" 750
if [ "$LIVE" -eq 1 ]; then
    [ "$(stat -c %U "$STATE")" = "bytelocker" ] || chown bytelocker:bytelocker "$STATE"
fi

# Config: never overwrite what staff edited; always refresh the reference copy.
for kind in "${CONFIGS[@]}"; do
    example="$SRC/config/$kind.example.yaml"
    put_file "$example" "$ETC/$kind.example.yaml" 644 || true
    if [ ! -e "$ETC/$kind.yaml" ]; then
        put_file "$example" "$ETC/$kind.yaml" 644 || true
        say "edit ${ETC#"$ROOT"}/$kind.yaml, then: bytelocker check-config ${ETC#"$ROOT"}/$kind.yaml"
    fi
done

# The program.
case "$VENV_MODE" in
    skip) say "skipped the venv (--skip-venv)" ;;
    link)
        [ -d "$VENV_FROM" ] || die "$VENV_FROM is not a folder"
        VENV_FROM="$(cd "$VENV_FROM" && pwd)"
        problem="$(venv_problem "$VENV_FROM")"
        [ -z "$problem" ] || die "$VENV_FROM is not a working ByteLocker venv: $problem"
        switch_venv "$VENV_FROM" ;;
    build)
        want="$(source_id)"
        have="$(cat "$OPT/venv/.bytelocker-source" 2>/dev/null || true)"
        if [ ! -e "$OPT/venv" ] && [ ! -L "$OPT/venv" ]; then
            reason=""""
        elif problem="$(venv_problem "$OPT/venv")"; [ -n "$problem" ]; then
            reason="the current one does not run: $problem"
        elif [ "$want" != "$have" ]; then
            reason="the sources changed"
        else
            reason="up to date"
        fi
        if [ "$reason" = "up to date" ]; then
            say "the venv is up to date"
        else
            [ -z "$reason" ] || say "building a new venv ($reason)"
            [ "$LIVE" -eq 1 ] || say "note: a venv built under --root only works at $OPT (its scripts name that path)"
            mkdir -p "$OPT"
            # A new folder for every build, never moved or renamed afterwards.
            name="venv-$(date -u +%Y%m%d-%H%M%S)-${want:0:8}"
            n=1
            while [ -e "$OPT/$name" ] || [ -L "$OPT/$name" ]; do
                name="venv-$(date -u +%Y%m%d-%H%M%S)-${want:0:8}-$n"; n=$((n + 1))
            done
            new="$OPT/$name"
            trap 'rm -rf "$new"' EXIT           # a failed build leaves nothing behind
            # System site packages: Picamera2 and lgpio come from apt on Raspberry Pi OS.
            "$PYTHON" -m venv --system-site-packages "$new"
            pip=("$new/bin/pip" install --quiet --disable-pip-version-check)
            if [ -n "$WHEELHOUSE" ]; then
                "${pip[@]}" --no-index --find-links "$WHEELHOUSE" bytelocker
            else
                "${pip[@]}" --upgrade pip 'setuptools<82' wheel
                "${pip[@]}" "$SRC"
            fi
            # Board libraries that staff add by hand (Jetson.GPIO, docs/deployment.md)
            # must be in the new venv too, or the upgraded door cannot drive its lock.
            for extra in $CARRIED_OVER; do
                if [ -x "$OPT/venv/bin/python" ] && "$OPT/venv/bin/python" -c \
                        'import importlib.metadata as m, sys; m.version(sys.argv[1])' "$extra" 2>/dev/null; then
                    if [ -n "$WHEELHOUSE" ]; then
                        "${pip[@]}" --no-index --find-links "$WHEELHOUSE" "$extra" \
                            || die "the current venv has $extra, but it is not in $WHEELHOUSE; the current venv is unchanged"
                    else
                        "${pip[@]}" "$extra" || die "could not install $extra into the new venv; the current one is unchanged"
                    fi
                    say "carried $extra over into the new venv"
                fi
            done
            problem="$(venv_problem "$new")"
            [ -z "$problem" ] || die "the new venv does not work ($problem); the current one is unchanged"
            echo "$want" > "$new/.bytelocker-source"
            trap - EXIT
            switch_venv "$name"
            say "installed ByteLocker into ${new#"$ROOT"}"
        fi ;;
esac
put_link /opt/bytelocker/venv/bin/bytelocker "$LINK" || true

# The units.  The dashboard's unit is installed by hand (docs/dashboard.md);
# where it is, it is restarted with the others if it is running.
changed_units=0
RESTART_UNITS=("${UNITS[@]}")
[ ! -f "$UNITDIR/bytelocker-web.service" ] || RESTART_UNITS+=(bytelocker-web.service)
for unit in "${UNITS[@]}"; do
    if put_file "$SRC/systemd/$unit" "$UNITDIR/$unit" 644; then changed_units=1; fi
    # What 'systemctl enable' makes, written directly so --root needs no systemctl.
    put_link "/etc/systemd/system/$unit" "$WANTS/$unit" || true
done
if [ "$LIVE" -eq 1 ]; then
    [ "$changed_units" -eq 0 ] || systemctl_live daemon-reload
    systemd-tmpfiles --create "$TMPFILES" 2>/dev/null || true
    for unit in "${RESTART_UNITS[@]}"; do
        if [ "$START" -eq 1 ] && [ "$unit" != bytelocker-web.service ]; then
            systemctl_live restart "$unit"
        else
            # An upgrade restarts what was running; a first install waits for --start or a reboot.
            systemctl_live try-restart "$unit"
        fi
    done
fi
say "done (${UNITS[*]}; config in /etc/bytelocker, data in /var/lib/bytelocker)"
