#!/bin/sh
# install.sh: installs metadata-init into this guest, or into a guest image with --root.
#
#   sh install.sh [--root DIR] [--init systemd|rc.local] [--uninstall]
#
# Installs
#   /usr/sbin/metadata-init              the boot script
#   /usr/lib/metadata-init/dhcp-hook     saves the URL from DHCP option 224
#   /etc/metadata-init.conf              only when there is none (all settings commented out)
#   systemd: /etc/systemd/system/metadata-init.service, enabled for multi-user.target;
#   otherwise (--init rc.local, or no systemd found): a line in /etc/rc.local
#   dhclient (when /etc/dhcp exists): an exit hook, and option 224 in dhclient.conf
# Every line it adds to a file it does not own ends in "# metadata-init"; --uninstall
# removes those lines and the files above, but keeps the config file, the state in
# /var/lib/metadata-init and the log.
set -eu
root='' init='' uninstall=''
while [ $# -gt 0 ]; do
	case $1 in
	--root) root=${2:?--root needs a directory}; shift 2 ;;
	--root=*) root=${1#--root=}; shift ;;
	--init) init=${2:?--init needs systemd or rc.local}; shift 2 ;;
	--uninstall) uninstall=1; shift ;;
	*) echo "usage: install.sh [--root DIR] [--init systemd|rc.local] [--uninstall]" >&2; exit 2 ;;
	esac
done
root=${root%/}
[ -z "$root" ] || [ -d "$root" ] || { echo "install.sh: $root is not a directory" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "$init" ]; then
	init=rc.local
	for f in /run/systemd/system /lib/systemd/systemd /usr/lib/systemd/systemd; do
		[ -e "$root$f" ] && init=systemd
	done
fi
case $init in systemd | rc.local) ;; *) echo "install.sh: --init must be systemd or rc.local" >&2; exit 2 ;; esac

BIN=/usr/sbin/metadata-init
HOOK=/usr/lib/metadata-init/dhcp-hook
UNIT=/etc/systemd/system/metadata-init.service
WANTS=/etc/systemd/system/multi-user.target.wants/metadata-init.service
RC_LOCAL=/etc/rc.local
DHCLIENT_HOOK=/etc/dhcp/dhclient-exit-hooks.d/metadata-init
DHCLIENT_CONF=/etc/dhcp/dhclient.conf
MARK='# metadata-init'

drop_marked() { # drop_marked FILE: remove the lines this installer added, keep the file's mode
	[ -f "$1" ] || return 0
	grep -v " $MARK\$" "$1" > "$1.mi-tmp" || true
	cat "$1.mi-tmp" > "$1" && rm -f "$1.mi-tmp"
}
put() { # put SOURCE DEST MODE
	mkdir -p "$(dirname "$root$2")"
	cp "$1" "$root$2.mi-tmp" && chmod "$3" "$root$2.mi-tmp" && mv -f "$root$2.mi-tmp" "$root$2"
}

if [ -n "$uninstall" ]; then
	rm -f "$root$BIN" "$root$HOOK" "$root$UNIT" "$root$WANTS" "$root$DHCLIENT_HOOK"
	rmdir "$root/usr/lib/metadata-init" 2> /dev/null || true
	drop_marked "$root$RC_LOCAL"
	drop_marked "$root$DHCLIENT_CONF"
	echo "metadata-init removed (kept /etc/metadata-init.conf, /var/lib/metadata-init, the log)"
	exit 0
fi

put "$here/metadata-init" "$BIN" 755
put "$here/dhcp-hook" "$HOOK" 755
if [ ! -e "$root/etc/metadata-init.conf" ]; then
	mkdir -p "$root/etc"
	cat > "$root/etc/metadata-init.conf" << 'EOF'
# metadata-init settings: key=value lines, read but never sourced (metadata-server's README,
# "The guest boot script"); a comment is a line of its own
#metadata_url=http://169.254.169.254
#timeout=5
#retry_total=60
#source=network
#network_mode=dhcp
#run_user_data=no
#interface=eth0
# The server's Ed25519 public key (the base64 line of its PEM): the document must be signed
#verify_key=
EOF
	chmod 644 "$root/etc/metadata-init.conf"
fi

if [ "$init" = systemd ]; then
	put "$here/metadata-init.service" "$UNIT" 644
	mkdir -p "$(dirname "$root$WANTS")"
	ln -sf "$UNIT" "$root$WANTS"
	if [ -z "$root" ] && command -v systemctl > /dev/null; then systemctl daemon-reload || true; fi
else
	line="$BIN || true $MARK"
	if [ ! -f "$root$RC_LOCAL" ]; then
		mkdir -p "$root/etc"
		printf '#!/bin/sh\n%s\nexit 0\n' "$line" > "$root$RC_LOCAL"
	elif ! grep -q " $MARK\$" "$root$RC_LOCAL"; then
		# before the last "exit 0", or at the end when there is none
		L=$line awk '{ l[NR] = $0 } END {
			for (i = NR; i > 0; i--) if (l[i] ~ /^[ \t]*exit 0/) break
			for (j = 1; j <= NR; j++) { if (j == i) print ENVIRON["L"]; print l[j] }
			if (i == 0) print ENVIRON["L"] }' "$root$RC_LOCAL" > "$root$RC_LOCAL.mi-tmp"
		cat "$root$RC_LOCAL.mi-tmp" > "$root$RC_LOCAL" && rm -f "$root$RC_LOCAL.mi-tmp"
	fi
	chmod 755 "$root$RC_LOCAL"
fi

if [ -d "$root/etc/dhcp" ]; then
	mkdir -p "$(dirname "$root$DHCLIENT_HOOK")"
	cat > "$root$DHCLIENT_HOOK" << EOF
$MARK: save the metadata URL from DHCP option 224 (sourced by dhclient-script)
case \${reason:-} in BOUND | RENEW | REBIND | REBOOT) new_metadata_url=\${new_metadata_url:-} $HOOK || true ;; esac
EOF
	chmod 644 "$root$DHCLIENT_HOOK"
	if ! grep -qs " $MARK\$" "$root$DHCLIENT_CONF"; then
		printf 'option metadata-url code 224 = text; %s\nalso request metadata-url; %s\n' "$MARK" "$MARK" >> "$root$DHCLIENT_CONF"
	fi
fi
echo "metadata-init installed ($init)${root:+ into $root}"
