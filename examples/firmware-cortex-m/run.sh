#!/bin/sh
# Builds the Cortex-M3 firmware and boots it in QEMU (mps2-an385, its LAN9118 Ethernet) on user networking
# restricted to the forwarded loopback ports: the guest reaches nothing else.
#
#   ./run.sh [PORT] [--proxy PROXY_PORT] [--origin ORIGIN_PORT] [--pcap FILE] [--lean]
#
# PORT (default: a free one) is forwarded from 127.0.0.1 to the uppercase service on 10.0.2.15:12000, for
# TCP and UDP; PROXY_PORT (default: a free one) to the HTTP proxy on 10.0.2.15:8080. With --origin, the
# board reaches an HTTP server on 127.0.0.1:ORIGIN_PORT at 10.0.2.100:80 (a guestfwd through the riscv
# example's guestfwd-relay.py): `curl -x http://127.0.0.1:PROXY_PORT http://10.0.2.100/`. The UART (UART0) is
# this terminal (quit QEMU with Ctrl-A X). --pcap FILE records the guest's frames (QEMU's filter-dump), where
# the UDP replies can be seen: libslirp drops what a restrict=on guest sends over UDP. --lean boots the lean
# build (no proxy, no log).
set -eu
cd "$(dirname "$0")"

port=""
proxy=""
origin=""
pcap=""
lean=""
while [ $# -gt 0 ]; do
    case "$1" in
        --proxy) proxy="$2"; shift 2 ;;
        --origin) origin="$2"; shift 2 ;;
        --pcap) pcap="$2"; shift 2 ;;
        --lean) lean=1; shift ;;
        *) port="$1"; shift ;;
    esac
done
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
[ -n "$port" ] || port=$(free_port)
[ -n "$proxy" ] || proxy=$(free_port)

if [ -n "$lean" ]; then
    cargo build --release --target thumbv7m-none-eabi --target-dir target/lean --no-default-features --features lean
    elf=target/lean/thumbv7m-none-eabi/release/smoltalk-firmware-cortex-m
else
    cargo build --release --target thumbv7m-none-eabi
    elf=target/thumbv7m-none-eabi/release/smoltalk-firmware-cortex-m
fi

netdev="user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-10.0.2.15:12000,hostfwd=udp:127.0.0.1:$port-10.0.2.15:12000"
netdev="$netdev,hostfwd=tcp:127.0.0.1:$proxy-10.0.2.15:8080"
if [ -n "$origin" ]; then
    # QEMU splits its options at commas (a comma in the path is written twice) and the command's words at
    # spaces (the path is quoted).
    relay=$(printf '%s' "$(cd ../firmware-riscv && pwd)/guestfwd-relay.py" | sed 's/,/,,/g')
    netdev="$netdev,guestfwd=tcp:10.0.2.100:80-cmd:python3 '$relay' $origin"
fi
dump=""
if [ -n "$pcap" ]; then
    dump="-object filter-dump,id=dump0,netdev=n0,file=$pcap"
fi

echo "run.sh: 127.0.0.1:$port (tcp, udp) -> 10.0.2.15:12000; 127.0.0.1:$proxy -> the proxy on 10.0.2.15:8080" >&2
if [ -n "$origin" ]; then
    echo "run.sh: the board's 10.0.2.100:80 -> 127.0.0.1:$origin" >&2
fi
echo "run.sh: UART below, Ctrl-A X quits" >&2
# shellcheck disable=SC2086 # $dump is empty or three words on purpose
exec qemu-system-arm -M mps2-an385 -nographic \
    -net nic,netdev=n0 -netdev "$netdev" $dump \
    -kernel "$elf"
