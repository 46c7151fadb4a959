//! [`PoolStorage`]: where a [`super::ProxyServer`] keeps its slots and the handles of its refusers. The caller
//! owns it: firmware a [`FixedPool`] over a `static` array (the pool never changes), a host a storage of its own
//! that grows, so that the server can ask for another slot or refuser while it runs (see
//! [`super::ProxyServer::listeners`]). The core never allocates: a storage that grows does so in the caller's
//! memory.

use smoltcp::iface::SocketHandle;

use super::slot::ProxySlot;

/// The most refuser sockets a [`FixedPool`] keeps.
pub const MAX_REFUSERS: usize = 8;

/// The slots and refusers of a [`super::ProxyServer`], in the order their sockets were added to the socket set.
pub trait PoolStorage<const OUT: usize> {
    /// The slots, in the order they were added.
    fn slots(&self) -> &[ProxySlot<OUT>];
    /// The slots, to move them along.
    fn slots_mut(&mut self) -> &mut [ProxySlot<OUT>];
    /// The most slots this storage can ever hold (a fixed storage: the ones it has).
    fn slot_capacity(&self) -> usize;
    /// Adds a slot with no sockets yet ([`ProxySlot::NEW`]) after the others; `false` when the storage is full.
    fn push_slot(&mut self) -> bool;
    /// The refusers' sockets, in the order they were added.
    fn refusers(&self) -> &[SocketHandle];
    /// The refusers' sockets, to exchange one with a slot's (see [`super::ProxyServer::poll`]).
    fn refusers_mut(&mut self) -> &mut [SocketHandle];
    /// The most refusers this storage can ever hold.
    fn refuser_capacity(&self) -> usize;
    /// Adds a refuser's socket after the others; `false` when the storage is full.
    fn push_refuser(&mut self, handle: SocketHandle) -> bool;
}

/// A pool that never grows: the caller's slots (`&'static mut [ProxySlot<OUT>; N]` in firmware) and up to
/// [`MAX_REFUSERS`] refusers.
#[derive(Debug)]
pub struct FixedPool<S> {
    slots: S,
    refusers: heapless::Vec<SocketHandle, MAX_REFUSERS>,
}

impl<S> FixedPool<S> {
    /// A pool of `slots`, no refuser yet (they come with the server's configuration).
    pub fn new(slots: S) -> FixedPool<S> {
        FixedPool {
            slots,
            refusers: heapless::Vec::new(),
        }
    }
}

impl<S, const OUT: usize> PoolStorage<OUT> for FixedPool<S>
where
    S: AsMut<[ProxySlot<OUT>]> + AsRef<[ProxySlot<OUT>]>,
{
    fn slots(&self) -> &[ProxySlot<OUT>] {
        self.slots.as_ref()
    }

    fn slots_mut(&mut self) -> &mut [ProxySlot<OUT>] {
        self.slots.as_mut()
    }

    fn slot_capacity(&self) -> usize {
        self.slots.as_ref().len()
    }

    fn push_slot(&mut self) -> bool {
        false
    }

    fn refusers(&self) -> &[SocketHandle] {
        &self.refusers
    }

    fn refusers_mut(&mut self) -> &mut [SocketHandle] {
        &mut self.refusers
    }

    fn refuser_capacity(&self) -> usize {
        MAX_REFUSERS
    }

    fn push_refuser(&mut self, handle: SocketHandle) -> bool {
        self.refusers.push(handle).is_ok()
    }
}
