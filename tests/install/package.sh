#!/usr/bin/env bash
# CPack makes the Debian package `make package` makes: named mcpd, with the
# libraries' packages and adduser in Depends, every file under /usr and
# /etc/default/mcpd, that file a conffile, the maintainer scripts, and units
# naming /usr/sbin/mcpd. Skipped without cpack and dpkg-dev's tools.
# usage: package.sh BUILD_DIR VERSION MAN(ON|OFF)
. "$(dirname "$0")/lib.sh"
build=$1 version=$2 man=$3

for tool in cpack dpkg-deb dpkg-shlibdeps; do
    command -v "$tool" >/dev/null || skip "$tool not found (Debian packages cmake, dpkg-dev)"
done
if ! cpack --config "$build/CPackConfig.cmake" -B "$tmp/out" >"$tmp/cpack.log" 2>&1; then
    cat "$tmp/cpack.log" >&2
    fail "cpack failed"
fi
debs=("$tmp"/out/*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || fail "cpack made ${#debs[@]} packages: ${debs[*]}"
deb=${debs[0]}
[ "$(basename "$deb")" = "mcpd_${version}_$(dpkg --print-architecture).deb" ] ||
    fail "unexpected package file name $(basename "$deb")"

[ "$(dpkg-deb -f "$deb" Package)" = mcpd ] || fail "the package is not named mcpd"
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "the package's version is not $version"
depends=$(dpkg-deb -f "$deb" Depends)
for dep in adduser libc6 libmicrohttpd12 libsqlite3-0 libjansson4 libcurl4; do
    grep -qE "(^|, )$dep( |,|$)" <<<"$depends" || fail "Depends lacks $dep: $depends"
done

dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./||' | grep -v '/$' | sort >"$tmp/files"
files=(usr/bin/mcpctl usr/bin/mcplocal usr/sbin/mcpd
    usr/lib/systemd/system/mcpd.service usr/lib/systemd/user/mcplocal.service
    usr/lib/sysusers.d/mcpd.conf etc/default/mcpd)
if [ "$man" = ON ]; then
    files+=(usr/share/man/man8/mcpd.8 usr/share/man/man1/mcplocal.1 usr/share/man/man1/mcpctl.1)
fi
for f in "${files[@]}"; do
    grep -qxF "$f" "$tmp/files" || fail "the package lacks /$f"
done
! grep -vE '^(usr/|etc/default/mcpd$)' "$tmp/files" || fail "files outside /usr and /etc/default/mcpd"

dpkg-deb -e "$deb" "$tmp/control"
has_line "$tmp/control/conffiles" /etc/default/mcpd
for script in postinst prerm postrm; do
    [ -x "$tmp/control/$script" ] || fail "the package has no executable $script"
    sh -n "$tmp/control/$script" || fail "$script is not valid sh"
done
dpkg-deb -x "$deb" "$tmp/root"
has_line "$tmp/root/usr/lib/systemd/system/mcpd.service" 'ExecStart=/usr/sbin/mcpd $MCPD_OPTS'
has_line "$tmp/root/usr/lib/systemd/system/mcpd.service" 'EnvironmentFile=-/etc/default/mcpd'
has_line "$tmp/root/usr/lib/systemd/user/mcplocal.service" 'ExecStart=/usr/bin/mcplocal'
echo "package: $(basename "$deb") holds every file, its Depends and scripts"
