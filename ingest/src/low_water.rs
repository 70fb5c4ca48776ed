//! The socket's receive low-water mark (`SO_RCVLOWAT`, socket(7)).
//!
//! With a mark of N bytes a TCP socket reports readable only once N bytes are queued, and
//! since Linux 4.18 the kernel does not even wake the waiter (here the runtime's epoll) for
//! packets that leave the queue below the mark. Setting the mark re-checks the queue, so
//! lowering it to 1 wakes a reader at once if anything is queued. [`merged_read`] decides
//! the mark; this module only sets it.
//!
//! Neither `rustix` nor `socket2` offers this option, so this is the one place in the
//! workspace with `unsafe`: a plain `setsockopt(2)` on a borrowed descriptor.
//!
//! [`merged_read`]: crate::merged_read
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Sets the receive low-water mark of `socket` to `bytes` (1 = readable with any byte).
pub fn set(socket: &impl AsFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let fd = socket.as_fd();
    // SAFETY: `fd` is borrowed from a live socket for the duration of the call; the option
    // value is a c_int on this stack frame and its exact size is passed as its length.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The socket's receive buffer (`SO_RCVBUF`, as the kernel accounts it).
pub fn receive_buffer(socket: &impl AsFd) -> io::Result<usize> {
    Ok(rustix::net::sockopt::socket_recv_buffer_size(socket)?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::timeout;

    use super::*;

    /// How long a wake-up that must not come is waited for.
    const QUIET: Duration = Duration::from_millis(300);
    /// How long one that must come may take on a busy machine.
    const PATIENCE: Duration = Duration::from_secs(20);

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sender = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (receiver, _) = listener.accept().await.unwrap();
        (sender, receiver)
    }

    /// What merged reads rely on, on a real loopback connection: bytes below the mark do not
    /// wake the reader's event loop, reaching the mark does, and lowering the mark wakes it
    /// at once for what is already queued.
    #[tokio::test]
    async fn the_kernel_wakes_the_reader_only_at_the_mark_or_when_it_is_lowered() {
        let (mut sender, receiver) = pair().await;
        assert!(receive_buffer(&receiver).unwrap() > 0);
        set(&receiver, 1000).unwrap();
        let mut buf = [0; 4096];
        // A new socket starts out presumed readable; the first read finds nothing and clears it.
        assert_eq!(receiver.try_read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        sender.write_all(&[1; 999]).await.unwrap();
        assert!(timeout(QUIET, receiver.readable()).await.is_err(), "woken below the mark");
        sender.write_all(&[2]).await.unwrap();
        timeout(PATIENCE, receiver.readable()).await.unwrap().unwrap();
        assert_eq!(receiver.try_read(&mut buf).unwrap(), 1000);
        // Drained: the runtime forgets the readiness.
        assert_eq!(receiver.try_read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);

        sender.write_all(&[3; 10]).await.unwrap();
        assert!(timeout(QUIET, receiver.readable()).await.is_err(), "woken below the mark");
        set(&receiver, 1).unwrap();
        timeout(PATIENCE, receiver.readable()).await.unwrap().unwrap();
        assert_eq!(receiver.try_read(&mut buf).unwrap(), 10);
    }
}
