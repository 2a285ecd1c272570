#!/bin/bash
# Test of ansible/edeploy-install.yml, run as root on a Debian 12 machine
# (CI): the playbook installs the .deb on this machine (an [edeployservers]
# inventory of localhost, local connection) with its own directories and the
# profiles of tests/apache/config; the initrd's request must then get its
# configure script, a second run must change nothing, and pxemngr=true must
# register the machine with pxemngr (a stand-in that records its calls).
#
#   bash tests/ansible.sh
#
# Ends with `N passed, N failed`; exits non-zero on any failure. It needs
# ansible-core (from PyPI: `python3 -m pip install ansible-core`, .ci/run
# does it), refuses to touch an edeploy it did not install, and leaves the
# machine as it found it: package purged, its directories removed, the CGI
# module and Apache as they were.
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
marker=/var/tmp/edeploy-ansible-test.owned
root=/var/tmp/edeploy-ansible-test
url=http://127.0.0.1/cgi-bin/edeploy
pidfile=/run/apache2/apache2.pid
stub=/usr/local/sbin/pxemngr

# shellcheck source=tests/tap.sh
. "$top/tests/tap.sh"

known_to_dpkg() { dpkg-query -W -f '${Status}' edeploy 2>/dev/null | grep -q ' installed$\| config-files$\|half'; }
apache_running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; }
owner_is() { [ "$(stat -c %U:%G "$2" 2>/dev/null)" = "$1" ]; }
conf_has() { grep -qx "$1" /etc/edeploy.conf; }

[ "$(id -u)" = 0 ] || fatal "must run as root"
[ -f /etc/debian_version ] || fatal "must run on Debian"
command -v ansible-playbook >/dev/null || fatal "ansible-playbook not found: python3 -m pip install ansible-core"

work=$(mktemp -d)
apache_was_running=0
apache_running && apache_was_running=1
cgid_was_enabled=0
[ -e /etc/apache2/mods-enabled/cgid.load ] && cgid_was_enabled=1

cleanup() {
	if [ -e "$marker" ]; then
		known_to_dpkg && dpkg --purge edeploy >/dev/null 2>&1
		rm -rf "$root" /var/lib/edeploy /var/cache/edeploy_*.deb
		rm -f "$marker"
	fi
	rm -f "$stub"
	[ "$cgid_was_enabled" = 1 ] || a2dismod -q -f cgid >/dev/null 2>&1
	if [ "$apache_was_running" = 0 ]; then
		apache_running && apache2ctl stop >/dev/null 2>&1
	elif apache_running; then
		apache2ctl graceful >/dev/null 2>&1
	fi
	rm -rf "$work"
}
trap cleanup EXIT

if [ -e "$marker" ]; then
	known_to_dpkg && dpkg --purge edeploy >/dev/null 2>&1
	rm -rf "$root" /var/lib/edeploy
	rm -f "$marker"
elif known_to_dpkg || [ -e /var/lib/edeploy ] || [ -e "$root" ]; then
	fatal "edeploy, /var/lib/edeploy or $root exists and was not made by this test: not touching it"
fi
[ ! -e "$stub" ] || fatal "$stub exists: not touching it"
touch "$marker"

# --- the package ---------------------------------------------------------------
(cd "$top" && packaging/prepare.sh &&
	cargo deb --locked --output "$work") >"$work/build.log" 2>&1
deb=$(find "$work" -maxdepth 1 -name 'edeploy_*.deb' | head -n 1)
[ -n "$deb" ] || { cat "$work/build.log"; fatal "cargo deb builds a .deb"; }
ok "cargo deb builds $(basename "$deb")"

# --- the playbook --------------------------------------------------------------
cat >"$work/hosts" <<EOF
[edeployservers]
localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3 ansible_become=false
EOF
playbook() {
	local log=$1
	shift
	(cd "$top/ansible" && ANSIBLE_NOCOLOR=1 ansible-playbook -i "$work/hosts" edeploy-install.yml \
		-e edeploy_package="$deb" -e edeploy_profiles="$top/tests/apache/config" \
		-e edeploy_configdir="$root/config/" -e edeploy_hwdir="$root/hw/" \
		-e edeploy_logdir="$root/logs/" -e edeploy_healthdir="$root/health/" \
		-e edeploy_lockfile="$root/lock/edeploy.lock" \
		-e edeploy_metadata_url=http://metadata.example.com/ "$@") >"$work/$log" 2>&1
}
recap() { grep -E '^localhost +:' "$work/$1"; }

playbook run1.log
rc=$?
recap run1.log
[ "$rc" = 0 ] || { cat "$work/run1.log"; fatal "first run of the playbook"; }
ok "first run of the playbook"
check "the package is installed" bash -c "dpkg-query -W -f '\${Status}' edeploy | grep -q ' installed$'"
check "CONFIGDIR set" conf_has "CONFIGDIR = $root/config/"
check "HWDIR set" conf_has "HWDIR = $root/hw/"
check "LOGDIR set" conf_has "LOGDIR = $root/logs/"
check "HEALTHDIR set" conf_has "HEALTHDIR = $root/health/"
check "LOCKFILE set" conf_has "LOCKFILE = $root/lock/edeploy.lock"
check "USEPXEMNGR off" conf_has "USEPXEMNGR = False"
check "METADATAURL set" conf_has "METADATAURL = http://metadata.example.com/"
check "the commented PXEMNGRURL example stays" grep -q '^#PXEMNGRURL' /etc/edeploy.conf
for d in config hw logs health; do
	check "$root/$d belongs to www-data" owner_is www-data:www-data "$root/$d"
done
check "lock file belongs to www-data" owner_is www-data:www-data "$root/lock/edeploy.lock"
check "the operator's profile copied" cmp -s "$top/tests/apache/config/vm.specs" "$root/config/vm.specs"
check "the operator's state copied" cmp -s "$top/tests/apache/config/state" "$root/config/state"
check "a CGI module enabled" [ -e /etc/apache2/mods-enabled/cgid.load ] || [ -e /etc/apache2/mods-enabled/cgi.load ]
check "the Apache conf enabled" [ -L /etc/apache2/conf-enabled/edeploy.conf ]
check "Apache running" apache_running

# The initrd's request (init: curl -s -S -F section=… -F file=@/hw.json).
cp "$top/tests/apache/hw.json" "$work/hw.json"
(cd "$work" && curl -s -S -o answer -F section=SERVER -F file=@hw.json "$url/upload.py")
sed 's/^/  upload.py: /' "$work/answer" | head -n 3
check "the machine gets the configure script of profile vm" grep -qx '#EDEPLOY_PROFILE = vm' "$work/answer"
check "the answer carries METADATA_URL" grep -q 'METADATA_URL=http://metadata.example.com/' "$work/answer"
check "its hardware saved in HWDIR" test -n "$(find "$root/hw" -name '*.hw' -type f)"
check "the server rewrote the state" bash -c "! cmp -s '$top/tests/apache/config/state' '$root/config/state'"
cp "$root/config/state" "$work/state.used"

playbook run2.log
rc=$?
recap run2.log
check "second run succeeds" [ "$rc" = 0 ]
check "second run reports no change (changed=0)" grep -qE '^localhost +: .* changed=0 ' "$work/run2.log"
check "second run keeps the state the server wrote" cmp -s "$work/state.used" "$root/config/state"

# pxemngr=true: the machine is registered (a stand-in records the call).
cat >"$stub" <<EOF
#!/bin/sh
echo "\$*" >> $root/pxemngr.calls
EOF
chmod 0755 "$stub"
install -m 0666 /dev/null "$root/pxemngr.calls"
playbook run3.log -e pxemngr=true -e edeploy_pxemngr_url=http://pxemngr.example.com/
rc=$?
recap run3.log
check "run with pxemngr=true succeeds" [ "$rc" = 0 ]
check "USEPXEMNGR on" conf_has "USEPXEMNGR = True"
check "PXEMNGRURL set" conf_has "PXEMNGRURL = http://pxemngr.example.com/"
(cd "$work" && curl -s -S -o answer3 -F section=SERVER -F file=@hw.json "$url/upload.py")
check "the machine is registered with pxemngr" grep -q '^addsystem .*52:54:12:34:00:03' "$root/pxemngr.calls"
check "the answer carries PXEMNGR_URL" grep -q 'PXEMNGR_URL=http://pxemngr.example.com/' "$work/answer3"

playbook run4.log
rc=$?
check "run without pxemngr turns it off again" bash -c "[ $rc = 0 ] && grep -qx 'USEPXEMNGR = False' /etc/edeploy.conf && ! grep -q '^PXEMNGRURL' /etc/edeploy.conf"

finish
