//! The socket's receive low-water mark (`SO_RCVLOWAT`, socket(7)).
//!
//! With a mark of N bytes a TCP socket reports readable only once N bytes are queued, and
//! since Linux 4.18 the kernel does not even wake the waiter (here the runtime's epoll) for
//! packets that leave the queue below the mark. Setting the mark re-checks the queue, so
//! lowering it to 1 wakes a reader at once if anything is queued. [`merged_read`] decides
//! the mark; this module sets it, and keeps the kernel's reaction to it from costing the
//! publisher TCP window.
//!
//! Bytes gathering below a mark take TCP window: the publisher can send only what the
//! buffer has room for, and a socket that fills before its mark wakes the reader only by the
//! kernel's memory-pressure check (Linux 5.7 and later; before, not until the reader's
//! timer). [`WindowGuard::make_room`] therefore asks the kernel, before the first
//! mark, for room for twice the largest: when a mark needs more buffer than the socket has,
//! Linux (4.18 and later, `tcp_set_rcvlowat`) raises the buffer, unlocked, so receive
//! autotuning still grows it (to twice the mark before 6.5, by the payload-to-buffer ratio
//! it measured from 6.5). The room it made is read back from the window clamp, and marks
//! stay within half of it. From 6.5 until a fix (`21b29e74ffe5`, in 6.18 and some stable
//! releases) raising the buffer also clamps the window to the mark, so a publisher on a long
//! link would send one mark per round trip: [`WindowGuard`] puts the clamp back after a
//! mark that set it to the mark, as fixed kernels leave it.
//!
//! Bytes below the mark are never reported to the runtime, so the merged reads' timer takes
//! them with [`recv_queued`], which also returns the kernel's arrival stamp of the last
//! packet read (`SO_TIMESTAMPNS`, [`stamp_arrivals`]): when frames arrived, whenever they
//! are read.
//!
//! Neither `rustix` nor `socket2` offers these options, and the runtime reads only when it
//! was told the socket is readable, so this is the one place in the workspace with `unsafe`:
//! plain `setsockopt(2)`, `getsockopt(2)` and `recvmsg(2)` on a borrowed descriptor (and
//! `ioctl(FIONREAD)` in a test).
//!
//! [`merged_read`]: crate::merged_read
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, SystemTime};

/// Sets the receive low-water mark of `socket` to `bytes` (1 = readable with any byte).
pub fn set(socket: &impl AsFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int(socket, libc::SOL_SOCKET, libc::SO_RCVLOWAT, value)
}

/// Keeps a socket's TCP window clamp (`TCP_WINDOW_CLAMP`) where the kernel's own tuning
/// puts it, not at a mark: one `getsockopt` per mark set (a few a second per publisher),
/// whatever payload ratio the kernel measured.
#[derive(Debug, Clone, Copy)]
pub struct WindowGuard {
    /// The clamp as last seen other than at a mark (receive autotuning moves it with the
    /// buffer).
    clamp: libc::c_int,
}

impl WindowGuard {
    /// Reads `socket`'s window clamp.
    pub fn new(socket: &impl AsFd) -> io::Result<Self> {
        let clamp = get_int(socket, libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP)?;
        Ok(Self { clamp })
    }

    /// Before a socket's first mark: asks the kernel to size `socket`'s receive buffer for
    /// `bytes` of payload, by setting a mark that large (the kernel raises the buffer for it
    /// and leaves it raised; a window clamp lowered to it is put back), and returns the
    /// guard for the marks after it with the room made: the window clamp then (the payload
    /// the buffer holds: half the raised buffer before Linux 6.5, at least the mark after).
    /// The caller sets the mark it wants next.
    pub fn make_room(socket: &impl AsFd, bytes: usize) -> io::Result<(Self, usize)> {
        let mut guard = Self::new(socket)?;
        set(socket, bytes)?;
        guard.after_mark(socket, bytes)?;
        // What `after_mark` read or put back: the clamp now.
        let room = usize::try_from(guard.clamp).unwrap_or(0);
        Ok((guard, room))
    }

    /// After a mark of `bytes` was set: puts the window clamp back if setting the mark
    /// lowered it to the mark. Returns whether it had.
    pub fn after_mark(&mut self, socket: &impl AsFd, bytes: usize) -> io::Result<bool> {
        let now = get_int(socket, libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP)?;
        let mark = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        if now != mark || now >= self.clamp {
            self.clamp = now;
            return Ok(false);
        }
        set_int(socket, libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP, self.clamp)?;
        Ok(true)
    }
}

fn set_int(
    socket: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let fd = socket.as_fd();
    // SAFETY: `fd` is borrowed from a live socket for the duration of the call; the option
    // value is a c_int on this stack frame and its exact size is passed as its length.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Has the kernel stamp each packet `socket` receives with its arrival (`SO_TIMESTAMPNS`,
/// socket(7)): [`recv_queued`] then tells when the last bytes it read arrived.
pub(crate) fn stamp_arrivals(socket: &impl AsFd) -> io::Result<()> {
    set_int(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Reads what is queued on `socket` into `buf` without waiting and without the runtime's
/// readiness (`recvmsg(2)` with `MSG_DONTWAIT`): a merged read's timer takes the bytes
/// gathered below the mark, which the kernel has not reported. Returns the bytes read (0:
/// the peer closed) and, with [`stamp_arrivals`], when the last of them arrived (TCP
/// reports the stamp of the last packet read; realtime clock).
pub(crate) fn recv_queued(
    socket: &impl AsFd,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SystemTime>)> {
    let fd = socket.as_fd();
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // Room for one control message holding a timespec, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data, valid zeroed; the fields set below point at live
    // buffers on this stack frame (iov, control) or at `buf`, a live exclusive slice.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: `fd` is borrowed from a live socket for the call; the kernel writes at most
    // `iov_len` bytes into `buf` and at most `msg_controllen` bytes into `control`.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let mut stamp = None;
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        // A control message cut short: no stamp rather than half of one.
        return Ok((n, None));
    }
    // SAFETY: `CMSG_LEN` is arithmetic on a constant.
    let stamp_len = unsafe { libc::CMSG_LEN(size_of::<libc::timespec>() as libc::c_uint) };
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within the
    // `msg_controllen` it set; a timespec is read (unaligned) only from a message of that
    // type long enough to hold one.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                && (*cmsg).cmsg_len as usize >= stamp_len as usize
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
                let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
                stamp = Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos));
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok((n, stamp))
}

fn get_int(socket: &impl AsFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let fd = socket.as_fd();
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as in `set_int`; the kernel writes at most `len` bytes into `value`, a c_int
    // on this stack frame, and `len` is a socklen_t on it too.
    let rc = unsafe {
        libc::getsockopt(fd.as_raw_fd(), level, name, (&raw mut value).cast(), &raw mut len)
    };
    if rc == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
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

    /// Once the room is made, the highest mark leaves the window as it was, whatever the
    /// kernel does with it; a clamp lowered to the mark, as Linux 6.5 until a fix in 6.18
    /// lowers it, is put back; one the kernel's tuning moved is followed.
    #[tokio::test]
    async fn a_mark_never_leaves_the_window_clamped() {
        let (mut sender, receiver) = pair().await;
        sender.write_all(&[1; 100_000]).await.unwrap();
        let (mut guard, _) = WindowGuard::make_room(&receiver, crate::merged_read::ROOM).unwrap();
        let clamp = || get_int(&receiver, libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP).unwrap();
        let before = clamp();
        let highest = crate::merged_read::MAX_LOW_WATER;
        set(&receiver, highest).unwrap();
        guard.after_mark(&receiver, highest).unwrap();
        assert_eq!(clamp(), before);

        // A mark under the first clamp (on Linux 4.20-6.4 that clamp is the highest mark).
        let mark = usize::try_from(before / 2).unwrap();
        set(&receiver, mark).unwrap();
        set_int(&receiver, libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP, mark as i32).unwrap();
        assert!(clamp() < before);
        assert!(guard.after_mark(&receiver, mark).unwrap());
        assert_eq!(clamp(), before);
        assert!(!guard.after_mark(&receiver, mark).unwrap());

        // Autotuning's clamp, not the mark: left, and the one to put back from now on.
        let tuned = 4 * mark as i32;
        set_int(&receiver, libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP, tuned).unwrap();
        assert!(!guard.after_mark(&receiver, mark).unwrap());
        assert_eq!(clamp(), tuned);
        set_int(&receiver, libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP, mark as i32).unwrap();
        assert!(guard.after_mark(&receiver, mark).unwrap());
        assert_eq!(clamp(), tuned);
    }

    /// After [`WindowGuard::make_room`] for two of the largest marks, made as a connection
    /// makes it (after traffic, at its first mark), a reader gathering one has the window
    /// open for another: the sender's two marks' worth all reach the receiver's queue
    /// unread (on loopback without the room, 127,973 bytes did here: less than one mark).
    #[tokio::test]
    async fn room_for_two_marks_keeps_the_window_open_while_one_gathers() {
        let (mut sender, receiver) = pair().await;
        let mut buf = vec![0; 64 << 10];
        for _ in 0..8 {
            sender.write_all(&buf).await.unwrap();
            let mut read = 0;
            while read < buf.len() {
                receiver.readable().await.unwrap();
                read += receiver.try_read(&mut buf).unwrap_or(0);
            }
        }
        let room = crate::merged_read::ROOM;
        let (_, made) = WindowGuard::make_room(&receiver, room).unwrap();
        assert!(made >= room, "{made} bytes of room");
        set(&receiver, crate::merged_read::MAX_LOW_WATER).unwrap();
        timeout(PATIENCE, sender.write_all(&vec![7; room])).await.unwrap().unwrap();
        let queued = || {
            let mut queued: libc::c_int = 0;
            // SAFETY: FIONREAD writes one c_int, here on this stack frame.
            let rc = unsafe { libc::ioctl(receiver.as_raw_fd(), libc::FIONREAD, &raw mut queued) };
            assert_eq!(rc, 0);
            usize::try_from(queued).unwrap()
        };
        let waited = std::time::Instant::now();
        while queued() < room {
            assert!(waited.elapsed() < PATIENCE, "{} of {room} bytes queued", queued());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Bytes below the mark, which the runtime is never told of, are read by `recv_queued`
    /// with the kernel's stamp of the last packet's arrival: after it was sent, before it
    /// was read. Nothing queued is `WouldBlock`; a closed peer, 0 bytes. (The kernel turns
    /// stamping on shortly after the first socket asks, from a work queue: packets before
    /// that come unstamped.)
    #[tokio::test]
    async fn bytes_below_the_mark_are_read_with_their_arrival() {
        let (mut sender, receiver) = pair().await;
        stamp_arrivals(&receiver).unwrap();
        set(&receiver, 1000).unwrap();
        let mut buf = [0; 2000];
        let nothing = recv_queued(&receiver, &mut buf).unwrap_err();
        assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);
        let waited = std::time::Instant::now();
        loop {
            sender.write_all(&[1]).await.unwrap();
            if recv_when_queued(&receiver, &mut buf).await.1.is_some() {
                break;
            }
            assert!(waited.elapsed() < PATIENCE, "never stamped");
        }
        // Two packets 20 ms apart: the stamp is the last one's.
        sender.write_all(&[4; 10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = SystemTime::now();
        sender.write_all(&[5; 10]).await.unwrap();
        let mut got = Vec::new();
        let stamp = loop {
            let (n, stamp) = recv_when_queued(&receiver, &mut buf).await;
            got.extend_from_slice(&buf[..n]);
            if got.len() == 20 {
                break stamp;
            }
        };
        let read = SystemTime::now();
        assert_eq!(got, [[4; 10], [5; 10]].concat());
        let stamp = stamp.expect("an arrival stamp");
        assert!(sent <= stamp && stamp <= read, "{sent:?} {stamp:?} {read:?}");
        drop(sender);
        assert_eq!(recv_when_queued(&receiver, &mut buf).await.0, 0);
    }

    /// `recv_queued` once something (bytes or the close) is there.
    async fn recv_when_queued(receiver: &TcpStream, buf: &mut [u8]) -> (usize, Option<SystemTime>) {
        let waited = std::time::Instant::now();
        loop {
            match recv_queued(receiver, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(waited.elapsed() < PATIENCE, "nothing came");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => return other.unwrap(),
            }
        }
    }
}
