#!/usr/bin/env bash
# `cmake --install` puts every file in its place, and nothing else: with the
# prefix /usr under a DESTDIR (the package's layout, settings in /etc) and
# with a prefix of its own (settings under it). The units name the programs
# and the settings file where they were installed; a settings file already
# there is kept; the installed mcpd runs.
# usage: install_tree.sh BUILD_DIR MAN(ON|OFF) VERSION
. "$(dirname "$0")/lib.sh"
build=$1 man=$2 version=$3

# expect_tree ROOT SETTINGS: the files under ROOT are exactly these, with
# the settings file at SETTINGS (relative to ROOT).
expect_tree() {
    {
        printf '%s\n' usr/bin/mcpctl usr/bin/mcplocal usr/sbin/mcpd \
            usr/lib/systemd/system/mcpd.service usr/lib/systemd/user/mcplocal.service \
            usr/lib/sysusers.d/mcpd.conf "$2" \
            usr/share/doc/mcpd/README.md usr/share/doc/mcpd/architecture.md \
            usr/share/doc/mcpd/mcpctl.md usr/share/doc/mcpd/mcplocal.md \
            usr/share/doc/mcpd/operations.md \
            usr/share/doc/mcpd/protocol.md
        if [ "$man" = ON ]; then
            printf '%s\n' usr/share/man/man1/mcpctl.1 usr/share/man/man1/mcplocal.1 \
                usr/share/man/man8/mcpd.8
        fi
    } | sort >"$tmp/want"
    (cd "$1" && find . -type f -o -type l) | sed 's|^\./||' | sort >"$tmp/got"
    diff -u "$tmp/want" "$tmp/got" >&2 || fail "the files installed under $1 differ (- missing, + unexpected)"
    for p in usr/bin/mcpctl usr/bin/mcplocal usr/sbin/mcpd; do
        [ -x "$1/$p" ] || fail "$1/$p is not executable"
    done
}

# The package's layout: prefix /usr, staged under DESTDIR.
stage=$tmp/stage
install_to "$build" /usr "$stage"
expect_tree "$stage" etc/default/mcpd
has_line "$stage/usr/lib/systemd/system/mcpd.service" 'ExecStart=/usr/sbin/mcpd $MCPD_OPTS'
has_line "$stage/usr/lib/systemd/system/mcpd.service" 'EnvironmentFile=-/etc/default/mcpd'
has_line "$stage/usr/lib/systemd/user/mcplocal.service" 'ExecStart=/usr/bin/mcplocal'
has_line "$stage/usr/lib/sysusers.d/mcpd.conf" 'u mcpd - "mcpd server" /var/lib/mcpd'
out=$("$stage/usr/sbin/mcpd" --version) || fail "the installed mcpd --version failed"
[ "$out" = "mcpd $version" ] || fail "the installed mcpd --version says '$out', not 'mcpd $version'"

# The operator's settings survive a reinstall.
echo 'MCPD_LISTEN=0.0.0.0:9999' >>"$stage/etc/default/mcpd"
install_to "$build" /usr "$stage"
has_line "$stage/etc/default/mcpd" 'MCPD_LISTEN=0.0.0.0:9999'

# A prefix of its own, as `make install PREFIX=...` does: the settings file
# goes under it, and the units name what is there.
own=$tmp/own
install_to "$build" "$own/usr"
expect_tree "$own" usr/etc/default/mcpd
has_line "$own/usr/lib/systemd/system/mcpd.service" "ExecStart=$own/usr/sbin/mcpd \$MCPD_OPTS"
has_line "$own/usr/lib/systemd/system/mcpd.service" "EnvironmentFile=-$own/usr/etc/default/mcpd"
has_line "$own/usr/lib/systemd/user/mcplocal.service" "ExecStart=$own/usr/bin/mcplocal"
echo "install tree: every file in place"
