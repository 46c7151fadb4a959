//! A server's workers: a thread each, and the server's end when the first of them stops (a worker returns only
//! when it fails; a panic is reported as [`KernelError::WorkerPanicked`]), so a worker that dies never leaves
//! the others serving short-handed with places that are never given back.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use super::KernelError;

/// Runs `work` on each of `items`, a thread each named "`name` INDEX", and returns how the first one stopped.
pub(super) fn run_workers<T: Send + 'static>(
    name: &str,
    items: Vec<T>,
    work: impl Fn(T) -> Result<(), KernelError> + Send + Clone + 'static,
) -> Result<(), KernelError> {
    let (stopped, first) = mpsc::channel();
    for (index, item) in items.into_iter().enumerate() {
        let stopped = stopped.clone();
        let work = work.clone();
        std::thread::Builder::new()
            .name(format!("{name} {index}"))
            .spawn(move || {
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(item)))
                    .unwrap_or(Err(KernelError::WorkerPanicked));
                let _ = stopped.send(result);
            })
            .map_err(|error| KernelError::Io {
                context: "cannot start a worker",
                error,
            })?;
    }
    drop(stopped);
    first.recv().unwrap_or(Err(KernelError::WorkerPanicked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_worker_to_stop_ends_the_server_whichever_it_is() {
        let ended = run_workers("test", vec![0u8, 1, 2], |i| match i {
            2 => Err(KernelError::ListenerFailed),
            _ => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                Ok(())
            }
        });
        assert!(matches!(ended, Err(KernelError::ListenerFailed)));

        let panicked = run_workers("test", vec![0u8, 1], |i| match i {
            1 => panic!("a bug in a worker"),
            _ => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                Ok(())
            }
        });
        assert!(matches!(panicked, Err(KernelError::WorkerPanicked)));
    }
}
