# shellcheck shell=sh
# Shared by scripts/demo and scripts/test: Debian packages and the virtualenv.
# Sourced, not run. POSIX sh.

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install PACKAGE...: installs what is missing; never starts the daemons it installs
# (dnsmasq, Kea, dhcpd, PostgreSQL are started by the tests themselves, in namespaces).
apt_install() {
    missing=""
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing="$missing $package"
    done
    [ -z "$missing" ] && return 0
    echo "installing Debian packages:$missing"
    added_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 755 /usr/sbin/policy-rc.d
        added_policy=yes
    fi
    as_root apt-get update -qq
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    if [ -n "$added_policy" ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
}

# make_venv EXTRAS [testbed]: .venv with the project installed (editable) and its
# extras; with "testbed", the test bench (./testbed) too.
make_venv() {
    if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
    # pip and setuptools talk a lot; their output is shown only when the install fails.
    log=.venv/install.log
    testbed=""
    if [ "${2:-}" = testbed ]; then testbed="-e ./testbed"; fi
    # shellcheck disable=SC2086 # $testbed is empty or two words on purpose
    if ! { .venv/bin/python -m pip install -q --upgrade pip &&
        .venv/bin/python -m pip install -q -c scripts/constraints.txt -e ".$1" $testbed
    } > "$log" 2>&1; then
        cat "$log" >&2
        echo "installing the project into .venv failed (log above, also in $log)" >&2
        return 1
    fi
}
