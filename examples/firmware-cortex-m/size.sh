#!/bin/sh
# The Cortex-M3 firmware's size report: builds it (release: opt-level "s", LTO, Thumb-2) and prints flash
# (.text + .rodata, the budget's measure; the vector table and the initial image of .data are in flash too and
# listed apart) and static RAM (.data + .bss, with the driver's frame buffers and the socket buffers apart), the
# stack, and the largest static objects, as a Markdown table (for docs/embedded.md). Needs readelf and nm
# (binutils).
#
#   ./size.sh                 the default build: full (logging, fragmentation) and the proxy
#   ./size.sh --lean          the lean build: the uppercase service only
#   ./size.sh --lean --proxy  the lean build with the proxy
set -eu
cd "$(dirname "$0")"
lean=""
proxy=""
for arg in "$@"; do
    case "$arg" in
        --lean) lean=1 ;;
        --proxy) proxy=1 ;;
        *) echo "usage: $0 [--lean [--proxy]]" >&2; exit 2 ;;
    esac
done
features=""
target=target
# Each build in its own target folder, so they never overwrite each other (tests/firmware_cortex_m.rs uses the
# same).
if [ -n "$lean" ] && [ -n "$proxy" ]; then
    features="--no-default-features --features lean,proxy"
    target=target/lean-proxy
elif [ -n "$lean" ]; then
    features="--no-default-features --features lean"
    target=target/lean
fi
# The default build has the proxy already: --proxy alone changes nothing.
# shellcheck disable=SC2086 # empty or three words on purpose
cargo build --release --target thumbv7m-none-eabi --target-dir "$target" $features >&2
elf="$target/thumbv7m-none-eabi/release/smoltalk-firmware-cortex-m"
# The core objects' sizes, as the full build prints them on its UART at boot (QEMU with no network backend at
# all: the LAN9118 is there, with no peer).
sizes=""
if [ -z "$features" ] && command -v qemu-system-arm >/dev/null; then
    uart=$(mktemp)
    qemu-system-arm -M mps2-an385 -display none -monitor none -net none -serial "file:$uart" -kernel "$elf" \
        2>/dev/null &
    qemu=$!
    for _ in 1 2 3 4 5 6 7 8 9 10; do grep -q "sizes:" "$uart" && break; sleep 0.2; done
    kill "$qemu" 2>/dev/null || true
    wait "$qemu" 2>/dev/null || true
    sizes=$(grep -o "sizes: .*" "$uart" | tr -d '\r' || true)
    rm -f "$uart"
fi
SIZES="$sizes" exec python3 - "$elf" <<'PY'
import os, subprocess, sys
elf = sys.argv[1]
sections = {}
for line in subprocess.run(["readelf", "-S", "-W", elf], capture_output=True, text=True, check=True).stdout.splitlines():
    fields = line.replace("[ ", "[").split()
    if len(fields) > 6 and fields[1].startswith("."):
        sections[fields[1]] = int(fields[5], 16)
symbols = []
for line in subprocess.run(["nm", "-S", "-C", elf], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.split(None, 3)
    if len(parts) == 4 and parts[2] in "bBdDrR":
        symbols.append((int(parts[1], 16), parts[3]))
size = lambda name: next((s for s, n in symbols if n == name), 0)
crate = "smoltalk_firmware_cortex_m::"
vectors, text, rodata = sections.get(".vector_table", 0), sections.get(".text", 0), sections.get(".rodata", 0)
data, bss = sections.get(".data", 0), sections.get(".bss", 0) + sections.get(".uninit", 0)
driver = size(crate + "lan9118::RX_BUFFER") + size(crate + "lan9118::TX_BUFFER")
# The sockets' byte buffers: the uppercase service's (TCP receive and send, UDP payloads) and the proxy's.
uppercase_buffers = sum(size(crate + name) for name in ["TCP_RX", "TCP_TX", "UDP_RX", "UDP_TX"])
proxy_buffers = size(crate + "proxy::PROXY_SOCKET_BUFFERS")
apart_from_driver = data + bss - driver
# The stack: from the end of the statics to the top of RAM; 64 KiB of it is reported by the firmware (memory.x).
stack = 64 * 1024
print("| part | bytes |\n|---|---:|")
rows = [
    ("flash: .text", text), ("flash: .rodata", rodata), ("**flash (.text + .rodata)**", text + rodata),
    ("flash: the vector table", vectors), ("flash: .data's initial image", data),
    ("flash image in all (vector table + .text + .rodata + .data)", vectors + text + rodata + data),
    ("RAM: .data", data), ("RAM: .bss", bss),
    ("of which the driver's frame buffers", driver),
    ("of which the uppercase service's socket buffers", uppercase_buffers),
]
if proxy_buffers:
    rows.append(("of which the proxy's socket buffers", proxy_buffers))
rows += [
    ("**static RAM apart from the driver's buffers (.data + .bss - frame buffers)**", apart_from_driver),
    ("**static RAM apart from the driver's and the socket buffers (.data + .bss - frame buffers - socket buffers)**",
     apart_from_driver - uppercase_buffers - proxy_buffers),
    ("stack (reserved, memory.x)", stack),
]
for label, value in rows:
    print(f"| {label} | {value:,} |")
sizes = os.environ.get("SIZES", "")
if sizes:
    print("\nCore objects (bytes, `core::mem::size_of` on this target, from the firmware's boot line):\n")
    for part in sizes.removeprefix("sizes: ").removesuffix(" bytes").split(", "):
        name, _, value = part.rpartition(" ")
        print(f"- `{name}`: {value}")
print("\nLargest static objects (RAM):\n")
for s, n in sorted((s, n) for s, n in symbols if s >= 256 and not n.startswith(".L") and n != "__INTERRUPTS")[-12:]:
    print(f"- `{n}`: {s:,} bytes")
PY
