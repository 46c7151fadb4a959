//! The virtio-net device on the virtio-mmio bus, as a smoltcp [`Device`], with static DMA memory.
//!
//! The driver is `virtio_drivers::device::net::VirtIONetRaw` (no `alloc`): it asks its [`Hal`] for the
//! virtqueues' pages, which come from a static page pool, and it takes the receive buffers we give it, which
//! are a static array too. Every receive buffer stays posted to the device; a received frame is copied out
//! into one staging buffer and its DMA buffer is posted again at once. Transmission is synchronous.

use core::ptr::{addr_of_mut, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// Descriptors per virtqueue (a power of two).
const QUEUE_SIZE: usize = 16;
/// Receive buffers posted to the device: each holds the virtio-net header and one Ethernet frame.
pub const RX_BUFFERS: usize = 8;
pub const RX_BUFFER_LEN: usize = 1536;
/// The largest Ethernet frame (without FCS) for a 1500-byte MTU.
const FRAME_LEN: usize = 1514;

/// QEMU virt's virtio-mmio slots: 8 of them, 0x1000 apart, on PLIC sources 1..=8.
const VIRTIO_MMIO_BASE: usize = 0x1000_1000;
const VIRTIO_MMIO_SIZE: usize = 0x1000;
const VIRTIO_MMIO_SLOTS: usize = 8;

/// Pages for the two virtqueues (the rings; packets use the static buffers below).
pub const DMA_PAGES: usize = 4;

#[repr(C, align(4096))]
struct DmaPool([u8; DMA_PAGES * PAGE_SIZE]);

static mut DMA_POOL: DmaPool = DmaPool([0; DMA_PAGES * PAGE_SIZE]);
static DMA_NEXT_PAGE: AtomicUsize = AtomicUsize::new(0);

static mut RX_POOL: [[u8; RX_BUFFER_LEN]; RX_BUFFERS] = [[0; RX_BUFFER_LEN]; RX_BUFFERS];

/// The firmware's [`Hal`]: M-mode, no paging, so a physical address is the address itself. DMA pages are
/// handed out once from [`DMA_POOL`] (the driver allocates its queues at start-up and keeps them).
pub struct StaticHal;

// SAFETY: pages come from a static pool, zeroed, page-aligned and never handed out twice; addresses are
// identity-mapped, and QEMU's DMA is cache-coherent.
unsafe impl Hal for StaticHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let first = DMA_NEXT_PAGE.fetch_add(pages, Ordering::Relaxed);
        if first + pages > DMA_PAGES {
            fatal!(
                "DMA pool exhausted",
                "DMA pool exhausted: {pages} more pages wanted, {DMA_PAGES} in all"
            );
        }
        // SAFETY: within the pool; each page is handed out once.
        let ptr = unsafe { (addr_of_mut!(DMA_POOL) as *mut u8).add(first * PAGE_SIZE) };
        // SAFETY: the pool is not null.
        let ptr = unsafe { NonNull::new_unchecked(ptr) };
        (ptr.as_ptr() as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        // The queues live as long as the firmware.
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).expect("MMIO at address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

type Net = VirtIONetRaw<StaticHal, MmioTransport<'static>, QUEUE_SIZE>;

/// The virtio-net device as a smoltcp Ethernet device.
pub struct VirtioNic {
    net: Net,
    rx_buffers: &'static mut [[u8; RX_BUFFER_LEN]; RX_BUFFERS],
    /// Which receive buffer a driver token (its first descriptor) stands for.
    rx_slot_of_token: [u8; QUEUE_SIZE],
    staging: [u8; RX_BUFFER_LEN],
    tx_buffer: [u8; FRAME_LEN],
}

impl VirtioNic {
    /// Finds the first virtio-net device on the virtio-mmio bus, initialises it and posts every receive
    /// buffer. Returns the device and its PLIC interrupt source.
    pub fn probe() -> Option<(VirtioNic, u32)> {
        for slot in 0..VIRTIO_MMIO_SLOTS {
            let base = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_SIZE;
            let header = NonNull::new(base as *mut VirtIOHeader)?;
            // SAFETY: QEMU virt's virtio-mmio window, identity-mapped, valid forever; each slot is used once.
            let transport = match unsafe { MmioTransport::new(header, VIRTIO_MMIO_SIZE) } {
                Ok(transport) => transport,
                Err(_) => continue, // an empty slot reports device id 0
            };
            if transport.device_type() != DeviceType::Network {
                continue;
            }
            let net = match Net::new(transport) {
                Ok(net) => net,
                Err(_e) => fatal!("virtio-net init", "virtio-net init: {_e}"),
            };
            // SAFETY: probe succeeds once (the firmware has one NIC), so this is the only reference.
            let rx_buffers = unsafe { &mut *addr_of_mut!(RX_POOL) };
            let mut nic = VirtioNic {
                net,
                rx_buffers,
                rx_slot_of_token: [u8::MAX; QUEUE_SIZE],
                staging: [0; RX_BUFFER_LEN],
                tx_buffer: [0; FRAME_LEN],
            };
            for index in 0..RX_BUFFERS {
                nic.post_rx(index);
            }
            return Some((nic, slot as u32 + 1));
        }
        None
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.net.mac_address()
    }

    /// DMA pages the driver took for its virtqueues so far (of [`DMA_PAGES`]).
    #[cfg_attr(not(feature = "full"), allow(dead_code))] // reported by the full build
    pub fn dma_pages_used() -> usize {
        DMA_NEXT_PAGE.load(Ordering::Relaxed)
    }

    /// Whether a received frame is waiting.
    pub fn rx_ready(&self) -> bool {
        self.net.poll_receive().is_some()
    }

    /// Acknowledges the device's interrupt (so its line falls before the PLIC claim is completed).
    pub fn ack_interrupt(&mut self) {
        let _ = self.net.ack_interrupt();
    }

    fn post_rx(&mut self, index: usize) {
        // SAFETY: the buffer is static and untouched until the device returns it under this token.
        match unsafe { self.net.receive_begin(&mut self.rx_buffers[index]) } {
            Ok(token) => self.rx_slot_of_token[token as usize] = index as u8,
            Err(_e) => fatal!(
                "virtio-net: cannot post a receive buffer",
                "virtio-net: cannot post receive buffer {index}: {_e}"
            ),
        }
    }

    /// Takes one received frame into the staging buffer; returns its length.
    fn take_frame(&mut self) -> Option<usize> {
        let token = self.net.poll_receive()?;
        let index = self.rx_slot_of_token[token as usize] as usize;
        // SAFETY: the same buffer as was posted under `token`.
        let result = unsafe {
            self.net
                .receive_complete(token, &mut self.rx_buffers[index])
        };
        let frame = match result {
            Ok((header, len)) => {
                self.staging[..len].copy_from_slice(&self.rx_buffers[index][header..header + len]);
                Some(len)
            }
            Err(e) => {
                log::warn!("virtio-net: receive failed: {e}");
                Some(0)
            }
        };
        self.post_rx(index);
        frame
    }
}

/// A received frame, in the staging buffer.
pub struct NicRx<'a> {
    frame: &'a [u8],
}

/// Room for one frame to send.
pub struct NicTx<'a> {
    net: &'a mut Net,
    buffer: &'a mut [u8; FRAME_LEN],
}

impl RxToken for NicRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl TxToken for NicTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let frame = &mut self.buffer[..len.min(FRAME_LEN)];
        let result = f(frame);
        if let Err(e) = self.net.send(frame) {
            log::warn!("virtio-net: send failed: {e}");
        }
        result
    }
}

impl Device for VirtioNic {
    type RxToken<'a> = NicRx<'a>;
    type TxToken<'a> = NicTx<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(NicRx<'_>, NicTx<'_>)> {
        if !self.net.can_send() {
            return None;
        }
        let len = self.take_frame()?;
        Some((
            NicRx {
                frame: &self.staging[..len],
            },
            NicTx {
                net: &mut self.net,
                buffer: &mut self.tx_buffer,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<NicTx<'_>> {
        if !self.net.can_send() {
            return None;
        }
        Some(NicTx {
            net: &mut self.net,
            buffer: &mut self.tx_buffer,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME_LEN;
        // The receive ring holds this many frames: smoltcp keeps its TCP window within what arrives at once.
        caps.max_burst_size = Some(RX_BUFFERS);
        caps
    }
}
