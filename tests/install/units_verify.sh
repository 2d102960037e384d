#!/usr/bin/env bash
# systemd-analyze accepts the installed units: `verify` on mcpd.service (as
# a system unit) and mcplocal.service (as a user unit), silently; and the
# system unit's sandbox keeps its exposure score at 2.0 or below. Skipped
# where systemd-analyze is missing.
# usage: units_verify.sh BUILD_DIR MAN(ON|OFF)
. "$(dirname "$0")/lib.sh"
build=$1 man=$2

command -v systemd-analyze >/dev/null ||
    skip "systemd-analyze not found (Debian package systemd): the units are not verified"
prefix=$tmp/usr
install_to "$build" "$prefix"
system_unit=$prefix/lib/systemd/system/mcpd.service
user_unit=$prefix/lib/systemd/user/mcplocal.service

# Documentation=man:... is looked up with man(1): in the installed pages.
export MANPATH=$prefix/share/man
man_check=()
[ "$man" = ON ] || man_check=(--man=no)

# sa ARGS...: systemd-analyze, which must succeed without a word.
sa() {
    if ! systemd-analyze "$@" >"$tmp/sa.log" 2>&1 || [ -s "$tmp/sa.log" ]; then
        cat "$tmp/sa.log" >&2
        fail "systemd-analyze $* did not pass silently"
    fi
}
sa verify "${man_check[@]}" "$system_unit"
# A user manager's view needs a runtime directory of its own.
mkdir -m 0700 "$tmp/run"
XDG_RUNTIME_DIR=$tmp/run sa --user verify "${man_check[@]}" "$user_unit"

if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    if ! systemd-analyze security --offline=yes --threshold=20 "$system_unit" >"$tmp/sec.log" 2>&1; then
        cat "$tmp/sec.log" >&2
        fail "mcpd.service's exposure is above 2.0: its sandbox lost an option"
    fi
fi
echo "units: systemd-analyze verify accepts both"
