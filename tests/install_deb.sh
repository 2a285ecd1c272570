#!/bin/bash
# Install test of the edeploy .deb, run as root on a Debian 12 machine (CI):
# build the package, lintian it, install it, serve it with Apache, provision
# a machine the initrd way, then remove and purge it and check that only the
# data the server wrote is left.
#
#   bash tests/install_deb.sh
#
# Ends with `N passed, N failed`; exits non-zero on any failure. Safe to run
# again: it refuses to touch an edeploy it did not install itself (marker
# file below) and cleans up after itself. EXPECTED_PROFILE (default
# kvm-test) is the profile the bundled example config gives legacy-config's
# hw/kvm-test.json.
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
expected_profile=${EXPECTED_PROFILE:-kvm-test}
marker=/var/tmp/edeploy-install-test.owned
data=/var/lib/edeploy
cgi=/usr/lib/cgi-bin/edeploy
url=http://127.0.0.1/cgi-bin/edeploy
pidfile=/run/apache2/apache2.pid

# shellcheck source=tests/tap.sh
. "$top/tests/tap.sh"

# Apache re-reads its configuration (or starts) and answers.
apache_reload() {
	if apache_running; then apache2ctl graceful; else apache2ctl start; fi
	for _ in $(seq 50); do
		curl -s -o /dev/null http://127.0.0.1/ && return 0
		sleep 0.2
	done
	return 1
}
# The initrd's request; $1 names the output file in $work.
upload_hw() { (cd "$work" && curl -s -S -D "$1.headers" -o "$1" -F file=@hw.json.in "$url/upload.py"); }
owner_is() { [ "$(stat -c %U:%G "$2" 2>/dev/null)" = "$1" ]; }
known_to_dpkg() { dpkg-query -W -f '${Status}' edeploy >/dev/null 2>&1 && ! dpkg-query -W -f '${Status}' edeploy | grep -q ' not-installed$'; }
apache_running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; }
absent() { [ ! -e "$1" ] && [ ! -L "$1" ]; }
files_in() { find "$1" -type f 2>/dev/null | wc -l; }
gone_or_holds_data() { [ ! -e "$1" ] || [ -n "$(ls -A "$1")" ]; }
[ "$(id -u)" = 0 ] || fatal "must run as root"
[ -f /etc/debian_version ] || fatal "must run on Debian"

work=$(mktemp -d)
apache_was_running=0

# Leave the machine as found: Apache in its former state, no edeploy.
cleanup() {
	if [ "$apache_was_running" = 0 ] && apache_running; then
		apache2ctl stop >/dev/null 2>&1
	fi
	if [ -e "$marker" ]; then
		known_to_dpkg && dpkg --purge edeploy >/dev/null 2>&1
		rm -rf "$data"
		rm -f "$marker"
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# --- tools -----------------------------------------------------------------
missing=()
for p in apache2 lintian curl dpkg-dev binutils iproute2; do
	dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q ' installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "installing ${missing[*]}"
	if ! { apt-get update -qq >/dev/null &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
		fatal "apt-get install ${missing[*]}"
	fi
fi
ok "apache2, lintian, curl, dpkg-dev, binutils, iproute2 installed"
apache_running && apache_was_running=1

# --- a previous run of this test, or an edeploy not ours -------------------
if [ -e "$marker" ]; then
	known_to_dpkg && dpkg --purge edeploy >/dev/null 2>&1
	rm -rf "$data"
	rm -f "$marker"
elif known_to_dpkg || [ -e "$data" ]; then
	fatal "edeploy or $data exists and was not installed by this test: not touching it"
fi
touch "$marker"

# --- build and lint ----------------------------------------------------------
# The README's commands: the binaries, the copyright file from cargo-about,
# then cargo-deb.
(cd "$top" && packaging/prepare.sh &&
	cargo deb --locked --output "$work") >"$work/build.log" 2>&1
deb=$(find "$work" -maxdepth 1 -name 'edeploy_*.deb' | head -n 1)
if [ -z "$deb" ]; then
	cat "$work/build.log"
	fatal "cargo deb builds a .deb"
fi
grep -i 'warning' "$work/build.log"
ok "cargo deb builds $(basename "$deb")"
changelog_version=$(dpkg-parsechangelog -l "$top/packaging/changelog" -S Version)
check "the package version is the changelog's ($changelog_version)" \
	[ "$(dpkg-deb -f "$deb" Version)" = "$changelog_version" ]
check "Depends lists libc6 (libgcc-s1 is required priority)" bash -c "dpkg-deb -f '$deb' Depends | grep -q '^libc6 '"
dpkg-deb -c "$deb" | awk '{print $6, $7, $8}' | sed -e 's,^\./,/,' -e 's/ *$//' >"$work/contents"
# Every binary of packaging/binaries (the drop-in install's list too) is in
# the package where packaging/README.md says.
grep -v '^[[:space:]]*\(#\|$\)' "$top/packaging/binaries" >"$work/binaries"
while read -r bin kind name; do
	case $kind in
	cgi) check "$name links to /usr/libexec/edeploy/$bin" \
		grep -qxF "/usr/lib/cgi-bin/edeploy/$name -> ../../../libexec/edeploy/$bin" "$work/contents" ;;
	bin) check "/usr/bin/$name is packaged" grep -qxF "/usr/bin/$name" "$work/contents" ;;
	esac
done <"$work/binaries"
check "/usr/sbin/edeploy-upload links to the upload program" \
	grep -qxF "/usr/sbin/edeploy-upload -> ../libexec/edeploy/upload" "$work/contents"
for file in /usr/share/man/man1/edeploy.1.gz /usr/share/man/man5/edeploy.conf.5.gz \
	/usr/share/man/man8/edeploy-upload.8.gz /usr/share/bash-completion/completions/edeploy \
	/usr/share/zsh/vendor-completions/_edeploy /usr/share/fish/vendor_completions.d/edeploy.fish; do
	check "$file is packaged" grep -qxF "$file" "$work/contents"
done
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/man/man5/edeploy.conf.5.gz | gzip -dc >"$work/edeploy.conf.5"
check "edeploy.conf(5) documents MAXCMDBSIZE" grep -q 'MAXCMDBSIZE' "$work/edeploy.conf.5"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/edeploy/copyright >"$work/copyright"
check "copyright lists the linked crates and their licenses" bash -c \
	"grep -q '^Files: .*serde_json' '$work/copyright' && grep -q '^License: MIT' '$work/copyright' && grep -q 'Permission is hereby granted' '$work/copyright'"

lintian --fail-on error "$deb" >"$work/lintian.log" 2>&1
lintian_rc=$?
sed 's/^/  lintian: /' "$work/lintian.log"
check "lintian reports no error" [ "$lintian_rc" = 0 ]
check "lintian output has no E: tag" bash -c "! grep -q '^E: ' '$work/lintian.log'"

# --- install -----------------------------------------------------------------
# Without a CGI module (a stock Debian), the install says which to enable.
a2dismod -q -f cgid cgi >/dev/null 2>&1
mpm=$(a2query -M)
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || {
	cat "$work/dpkg.log"
	fatal "dpkg -i"
}
ok "dpkg -i"
sed 's/^/  dpkg -i: /' "$work/dpkg.log" | grep 'edeploy:'
if [ "$mpm" = prefork ]; then module=cgi; else module=cgid; fi
check "the install names the CGI module to enable ($module, $mpm MPM)" grep -q "a2enmod $module " "$work/dpkg.log"
check "upload.py is an executable CGI" [ -x "$cgi/upload.py" ]
check "dpkg --verify edeploy (dpkg records the checksums cargo-deb leaves out)" dpkg --verify edeploy
check "/etc/edeploy.conf is a conffile" grep -qx /etc/edeploy.conf /var/lib/dpkg/info/edeploy.conffiles
check "/etc/edeploy.conf uses /var/lib/edeploy" grep -q '^CONFIGDIR *= */var/lib/edeploy/config' /etc/edeploy.conf
check "Apache snippet in conf-available" [ -f /etc/apache2/conf-available/edeploy.conf ]
check "postinst enabled the Apache snippet" [ -L /etc/apache2/conf-enabled/edeploy.conf ]
for d in config hw logs health; do
	check "$data/$d belongs to www-data" owner_is www-data:www-data "$data/$d"
done
check "lock file belongs to www-data" owner_is www-data:www-data "$data/edeploy.lock"
check "the queue next to it belongs to www-data" owner_is www-data:www-data "$data/edeploy.lock.queue"
if [ -f "$top/legacy-config/state" ]; then
	check "config seeded with the example state" cmp -s "$top/legacy-config/state" "$data/config/state"
	check "seeded files belong to www-data" owner_is www-data:www-data "$data/config/state"
else
	skip "no legacy-config/state to seed"
fi

ls -la "$data/config" >"$work/config.before"
dpkg -i "$deb" >"$work/dpkg2.log" 2>&1
check "dpkg -i again (reinstall) succeeds" [ $? = 0 ]
ls -la "$data/config" >"$work/config.after"
check "reinstall does not reseed the config" cmp -s "$work/config.before" "$work/config.after"

# --- serve ---------------------------------------------------------------------
a2enconf -q edeploy >/dev/null
a2enmod -q cgid >/dev/null
check "apache2ctl configtest" apache2ctl configtest
errlog=/var/log/apache2/error.log
errlog_start=$(($(stat -c %s "$errlog" 2>/dev/null || echo 0) + 1))
apache_reload
check "Apache answers on 127.0.0.1:80" curl -s -o /dev/null http://127.0.0.1/

hw=$top/legacy-config/hw/kvm-test.json
if [ ! -f "$hw" ]; then
	hw=$work/hw.json
	cat >"$hw" <<'EOF'
[["disk", "vda", "size", "20"],
 ["system", "product", "name", "edeploy_test_vm ()"],
 ["network", "eth0", "serial", "52:54:12:34:00:03"],
 ["network", "eth0", "ipv4", "192.168.122.45"]]
EOF
fi
cp "$hw" "$work/hw.json.in"
(cd "$work" && curl -s -S -D headers -o body -F file=@hw.json.in "$url/upload.py")
sed 's/^/  upload.py: /' "$work/body" | head -n 5
check "upload.py answers 200" grep -q '^HTTP/1.1 200' "$work/headers"
check "upload.py answers text/x-python" grep -qi '^Content-Type: text/x-python' "$work/headers"
check "configure script of profile $expected_profile" grep -qx "#EDEPLOY_PROFILE = $expected_profile" "$work/body"
hwfiles=$(find "$data/hw" -name '*.hw' -type f | wc -l)
check "one .hw file saved in $data/hw" [ "$hwfiles" = 1 ]
hwfile=$(find "$data/hw" -name '*.hw' -type f | head -n 1)
check ".hw file written by www-data" owner_is www-data:www-data "${hwfile:-/nonexistent}"
check ".hw file holds the pprinted items" grep -q "^\[('" "${hwfile:-/nonexistent}"

# A request that finds the lock taken waits in the queue next to it, and
# is answered once the lock is free (the queue is then what purge removes).
flock -o "$data/edeploy.lock" sh -c "cd '$work' && { curl -s -S -o queued -F file=@hw.json.in '$url/upload.py' & } && sleep 1"
for _ in $(seq 100); do grep -q '^#EDEPLOY_PROFILE' "$work/queued" 2>/dev/null && break; sleep 0.1; done
check "a request that waited for the lock is answered" grep -qx "#EDEPLOY_PROFILE = $expected_profile" "$work/queued"
check "it waited in the queue next to the lock file (its intent kept for reuse)" \
	test -n "$(find "$data/edeploy.lock.queue" -name '.*.intent.recycled')"

curl -s -S -o "$work/nofile" -F section=SERVER "$url/upload.py"
check "upload.py without a file answers the error script" grep -q 'No file passed to the CGI' "$work/nofile"

printf 'install log\n' | gzip -9n >"$work/install.log.gz"
(cd "$work" && curl -s -S -o /dev/null -F file=@install.log.gz "$url/upload.py")
check "uploaded log saved in $data/logs" cmp -s "$work/install.log.gz" "$data/logs/install.log.gz"

if [ -e "$cgi/upload-health.py" ]; then
	(cd "$work" && curl -s -S -o health -F file=@hw.json.in -F session=installtest "$url/upload-health.py")
	check "upload-health.py saves the hardware in $data/health" \
		test -n "$(find "$data/health" -name '*.hw' -type f)"
else
	skip "upload-health.py not packaged yet"
fi

curl -s -S -o "$work/status" -w '%{http_code}' "$url/status.py" >"$work/status.code"
check "status.py answers localhost" [ "$(cat "$work/status.code")" = 200 ]
check "status.py shows the profiles" grep -q kvm-test "$work/status"

# status.py from another address: a private Apache with the installed conf,
# in a network namespace of its own (only its loopback device, with two
# documentation addresses), so that the client is not local.
ns=$work/ns
mkdir -p "$ns/run" "$ns/logs"
chmod 0755 "$work" "$ns" "$ns/run"
cat >"$ns/httpd.conf" <<EOF
ServerRoot "$ns"
ServerName 192.0.2.1
Listen 192.0.2.1:8080
PidFile "$ns/run/httpd.pid"
DefaultRuntimeDir "$ns/run"
Mutex file:$ns/run default
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule authz_host_module /usr/lib/apache2/modules/mod_authz_host.so
LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
LoadModule cgid_module /usr/lib/apache2/modules/mod_cgid.so
ScriptSock "$ns/run/cgid.sock"
User www-data
Group www-data
ErrorLog "$ns/logs/error.log"
DocumentRoot "$ns"
Include /etc/apache2/conf-available/edeploy.conf
EOF
cat >"$ns/run.sh" <<'EOF'
ns=$1
ip link set lo up && ip addr add 192.0.2.1/32 dev lo && ip addr add 192.0.2.2/32 dev lo &&
	apache2 -f "$ns/httpd.conf" -k start || exit 1
for _ in $(seq 50); do
	curl -s -o /dev/null http://192.0.2.1:8080/ && break
	sleep 0.2
done
for u in status.py upload.py; do
	printf '%s from 192.0.2.2: ' "$u"
	curl -s -o /dev/null -w '%{http_code}\n' --interface 192.0.2.2 "http://192.0.2.1:8080/cgi-bin/edeploy/$u"
	printf '%s from 192.0.2.1: ' "$u"
	curl -s -o /dev/null -w '%{http_code}\n' "http://192.0.2.1:8080/cgi-bin/edeploy/$u"
done
apache2 -f "$ns/httpd.conf" -k stop
EOF
unshare -n sh "$ns/run.sh" "$ns" >"$work/other.codes" 2>&1
sed 's/^/  /' "$work/other.codes"
check "status.py refused to another address (403)" grep -qx 'status.py from 192.0.2.2: 403' "$work/other.codes"
check "status.py served to the server's own address" grep -qx 'status.py from 192.0.2.1: 200' "$work/other.codes"
check "upload.py served to another address" grep -qx 'upload.py from 192.0.2.2: 200' "$work/other.codes"

# A body over LimitRequestBody (MAXLOGSIZE + 64 KiB) is refused by Apache:
# with MAXLOGSIZE raised, the CGI would take it, Apache does not.
cp /etc/edeploy.conf "$work/edeploy.conf.orig"
sed -i 's/^MAXLOGSIZE = .*/MAXLOGSIZE = 128M/' /etc/edeploy.conf
truncate -s 65M "$work/big.log.gz"
(cd "$work" && curl -s -S -o big.answer -w '%{http_code}' -F file=@big.log.gz "$url/upload.py") >"$work/big.code"
check "Apache refuses a body over LimitRequestBody (413)" [ "$(cat "$work/big.code")" = 413 ]
check "no oversized log stored" [ ! -e "$data/logs/big.log.gz" ]
truncate -s 60M "$work/big.log.gz"
(cd "$work" && curl -s -S -o big.answer -F file=@big.log.gz "$url/upload.py")
check "a log under LimitRequestBody is stored" cmp -s "$work/big.log.gz" "$data/logs/big.log.gz"
rm -f "$work/big.log.gz" "$data/logs/big.log.gz"
cp "$work/edeploy.conf.orig" /etc/edeploy.conf

tail -c +"$errlog_start" "$errlog" >"$work/error.log"
sed 's/^/  error.log: /' "$work/error.log"
check "Apache logged no CGI failure" bash -c \
	"! grep -q -E 'End of script output before headers|malformed header|Permission denied|not found or unable to stat' '$work/error.log'"

# Without a CGI module the URLs say what to do instead of answering 404.
a2dismod -q -f cgid >/dev/null
apache_reload
curl -s -o "$work/nocgi" -w '%{http_code}' "$url/upload.py" >"$work/nocgi.code"
check "without a CGI module upload.py answers 503" [ "$(cat "$work/nocgi.code")" = 503 ]
check "the 503 names the module to enable" grep -q 'a2enmod cgid' "$work/nocgi"
a2enmod -q cgid >/dev/null
apache_reload

# --- remove and purge ------------------------------------------------------------
dpkg -r edeploy >"$work/remove.log" 2>&1
check "dpkg -r" [ $? = 0 ]
check "remove deletes the CGIs" [ ! -e "$cgi" ]
check "remove disables the Apache snippet" [ ! -e /etc/apache2/conf-enabled/edeploy.conf ]
check "remove keeps /etc/edeploy.conf" [ -f /etc/edeploy.conf ]
check "remove keeps the saved hardware" [ "$(files_in "$data/hw")" = "$hwfiles" ]
check "remove keeps the config directory" [ -d "$data/config" ]

dpkg --purge edeploy >"$work/purge.log" 2>&1
check "dpkg --purge" [ $? = 0 ]
check "purge deletes /etc/edeploy.conf" [ ! -e /etc/edeploy.conf ]
check "purge deletes the Apache snippet" [ ! -e /etc/apache2/conf-available/edeploy.conf ]
check "purge forgets the Apache enablement" bash -c "! a2query -c edeploy >/dev/null 2>&1"
check "purge deletes the lock file" [ ! -e "$data/edeploy.lock" ]
check "purge deletes the queue of waiting requests" [ ! -e "$data/edeploy.lock.queue" ]
check "purge keeps the configuration the server used, whole" bash -c \
	"! cmp -s '$top/legacy-config/kvm-test.cmdb' '$data/config/kvm-test.cmdb' && cmp -s '$top/legacy-config/kvm-test.specs' '$data/config/kvm-test.specs'"
check "purge deletes the seed checksums" [ ! -e "$data/config.seeded.md5sums" ]
if [ "$hwfiles" -gt 0 ]; then
	check "purge keeps the saved hardware" [ "$(files_in "$data/hw")" = "$hwfiles" ]
	check "purge says it keeps data" grep -q "keeping $data/hw" "$work/purge.log"
else
	check "purge deletes the empty hw directory" [ ! -e "$data/hw" ]
fi
check "purge deletes the empty health directory" gone_or_holds_data "$data/health"
check "purge deletes the empty logs directory" gone_or_holds_data "$data/logs"

# --- purge, then reinstall: a whole configuration -----------------------------
check "purge keeps the used configuration whole" bash -c \
	"cd '$data/config' && ls state kvm-test.specs kvm-test.configure kvm-test.cmdb >/dev/null"
dpkg -i "$deb" >"$work/dpkg4.log" 2>&1
check "reinstall after purge" [ $? = 0 ]
check "edeploy check is clean after purge and reinstall" edeploy check "$data/config"
apache_reload
upload_hw again
check "after purge and reinstall the machine gets $expected_profile" \
	grep -qx "#EDEPLOY_PROFILE = $expected_profile" "$work/again"
check "edeploy-upload --dry-run on PATH" bash -c \
	"edeploy-upload --dry-run -f '$work/hw.json.in' | grep -qx '#EDEPLOY_PROFILE = $expected_profile'"
dpkg --purge edeploy >"$work/purge3.log" 2>&1
rm -rf "$data"

# --- a clean cycle leaves nothing --------------------------------------------------
# Viewing the status page writes the server's cache files next to the
# untouched examples: purge removes them with the examples.
dpkg -i "$deb" >"$work/dpkg3.log" 2>&1 && apache_reload &&
	curl -s -S -o /dev/null "$url/status.py" && dpkg --purge edeploy >"$work/purge2.log" 2>&1
check "install, view the status, then purge" [ $? = 0 ]
for path in "$data" "$cgi" /usr/libexec/edeploy /usr/share/edeploy /usr/share/doc/edeploy \
	/etc/edeploy.conf /etc/apache2/conf-available/edeploy.conf /etc/apache2/conf-enabled/edeploy.conf; do
	check "nothing left at $path" absent "$path"
done
check "apache2ctl configtest after purge" apache2ctl configtest
if [ "$apache_was_running" = 0 ]; then apache2ctl stop; fi

finish
