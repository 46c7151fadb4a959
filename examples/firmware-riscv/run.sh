#!/bin/sh
# Builds the firmware and boots it in QEMU (riscv64 `virt`, M-mode, no BIOS) with a virtio-net device on
# user networking restricted to the forwarded loopback ports: the guest reaches nothing else.
#
#   ./run.sh [PORT] [--proxy PROXY_PORT] [--origin ORIGIN_PORT] [--pcap FILE]
#
# PORT (default: a free one) is forwarded from 127.0.0.1 to the uppercase service on 10.0.2.15:12000, for
# TCP and UDP; PROXY_PORT (default: a free one) to the HTTP proxy on 10.0.2.15:8080. With --origin, the
# board reaches an HTTP server on 127.0.0.1:ORIGIN_PORT at 10.0.2.100:80 (a guestfwd through
# guestfwd-relay.py): `curl -x http://127.0.0.1:PROXY_PORT http://10.0.2.100/`. Without it the proxy has no
# origin to reach. The UART is this terminal (quit QEMU with Ctrl-A X). --pcap FILE records the guest's
# frames (QEMU's filter-dump).
set -eu
cd "$(dirname "$0")"

port=""
proxy=""
origin=""
pcap=""
while [ $# -gt 0 ]; do
    case "$1" in
        --proxy) proxy="$2"; shift 2 ;;
        --origin) origin="$2"; shift 2 ;;
        --pcap) pcap="$2"; shift 2 ;;
        *) port="$1"; shift ;;
    esac
done
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
[ -n "$port" ] || port=$(free_port)
[ -n "$proxy" ] || proxy=$(free_port)

cargo build --release --target riscv64gc-unknown-none-elf
elf=target/riscv64gc-unknown-none-elf/release/smoltalk-firmware-riscv

netdev="user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-10.0.2.15:12000,hostfwd=udp:127.0.0.1:$port-10.0.2.15:12000"
netdev="$netdev,hostfwd=tcp:127.0.0.1:$proxy-10.0.2.15:8080"
if [ -n "$origin" ]; then
    # QEMU splits its options at commas (a comma in the path is written twice) and the command's words at
    # spaces (the path is quoted).
    relay=$(printf '%s' "$(pwd)/guestfwd-relay.py" | sed 's/,/,,/g')
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
exec qemu-system-riscv64 -machine virt -bios none -m 64M -nographic \
    -global virtio-mmio.force-legacy=false \
    -device virtio-net-device,netdev=n0 -netdev "$netdev" $dump \
    -kernel "$elf"
