//! A mailbox for file descriptors (Linux): how a producer hands a blob's memory (a `memfd`) to
//! the consumer so that it reaches the consumer even when the producer exits at once, and dies
//! with the consumer when no one is left to read it.
//!
//! The consumer binds a [`Mailbox`]: a listening Unix socket at an address in the abstract
//! namespace (no file; the name vanishes with the socket). A producer's [`MailboxSender`]
//! connects to it and sends each descriptor, tagged with a token, *before* it publishes the
//! record that names the token. A descriptor sent over a Unix socket lives in the receiving
//! socket's queue, owned by no process: the sender may exit, and the memory stays until the
//! receiver takes it ([`Mailbox::take`]) or the receiving socket closes (the consumer closes or
//! dies), which frees it.
//!
//! Rules:
//! - **One message, one descriptor.** A message is exactly [`MESSAGE_LEN`] bytes (the token, a
//!   little-endian `u64`) and one `SCM_RIGHTS` descriptor. Anything else (another length, no
//!   descriptor, several, a truncated control buffer) is skipped and every descriptor it carried
//!   is closed at once: the receiver never leaks a descriptor and never panics on a peer's
//!   bytes. Received descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`).
//! - **Same user only.** Anyone may connect to an abstract address, whatever their uid. The
//!   mailbox closes, unread, every connection whose peer (`SO_PEERCRED`, taken at `connect`) is
//!   not of its effective uid, and a sender refuses a listener of another uid
//!   ([`SendError::ForeignListener`]), so that no memory reaches another user. Abstract names
//!   have no permissions either: another user can bind an address first, and [`Mailbox::bind`]
//!   then fails ([`Error::AlreadyExists`]), so addresses should not be guessable.
//! - **`SOCK_SEQPACKET`, not `SOCK_DGRAM`.** An unconnected datagram receiver queues at most
//!   `net.unix.max_dgram_qlen` + 1 datagrams from all its senders together (11: the sysctl is
//!   10 by default), then every sender waits. A connected sequenced-packet socket keeps message
//!   boundaries but has no such count: each connection is bounded by its sender's send buffer
//!   (`SO_SNDBUF`, `net.core.wmem_default`, 212 992 bytes by default), which every queued
//!   message is charged to until it is read: 278 messages with the default sysctls on Linux
//!   6.18 (measurements: `docs/decisions/2026-12-07-fd-mailbox.md`).
//! - **A full queue makes the sender wait** in slices of at most [`SEND_SLICE`] (`poll` for
//!   `POLLOUT`), asking between slices whether the receiver is still alive; it gives up at its
//!   deadline ([`SendError::Timeout`]) or when the receiver is dead ([`SendError::PeerGone`]).
//!   The kernel also lets a user (but root or `CAP_SYS_RESOURCE`) have at most one descriptor
//!   more than its `RLIMIT_NOFILE` in flight over all its sockets: past them `sendmsg` fails
//!   with `ETOOMANYREFS`, and the sender waits the same way (in 1 ms sleeps: there is no
//!   readiness to poll for).
//! - **No listener is an answer, not a wait.** A refused connection (no socket at the address)
//!   or a reset one that cannot be re-made is [`SendError::NoListener`], for the caller to fall
//!   back on. A descriptor queued on a connection whose receiver then closed is gone with it: a
//!   new mailbox at the same address does not inherit it.
//! - **The stash is the receiver's memory.** [`Mailbox::take`] reads everything that has
//!   arrived and keeps descriptors by token until they are asked for; [`Mailbox::retain`] drops
//!   those that never will be. A later message with a token already stashed replaces the
//!   earlier one (which is closed). A same-user sender can fill the receiver's descriptor table
//!   (a same-user process can do worse, such as `ptrace`): received descriptors that find no
//!   free slot are dropped by the kernel (`MSG_CTRUNC`) and the message is skipped.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The longest abstract address: `sun_path` holds 108 bytes, the first of which is the NUL that
/// marks the abstract namespace.
pub const MAX_ADDRESS_LEN: usize = 107;

/// The length of every message: the token, a little-endian `u64`.
pub const MESSAGE_LEN: usize = 8;

/// The longest single wait of a sender whose receiver's queue is full, between two checks that
/// the receiver is alive.
pub const SEND_SLICE: Duration = crate::event::HEALTH_SLICE;

/// The listener's backlog of connections not yet accepted (the kernel caps it at
/// `net.core.somaxconn`).
const LISTEN_BACKLOG: libc::c_int = 128;

/// The most messages one [`Mailbox::take`] reads from one connection, so that a sender that
/// never stops cannot hold the receiver in one call; the rest is read by the next call.
const MAX_READS_PER_CONNECTION: usize = 4096;

/// The control buffer of one received message: room for 12 descriptors, so that a message
/// carrying several is seen as such (those beyond it are dropped by the kernel, `MSG_CTRUNC`).
const RECEIVE_CONTROL_LEN: usize = 64;

/// The control buffer of one sent message: room for [`MAX_SEND_FDS`] descriptors.
const SEND_CONTROL_LEN: usize = 128;

/// The most descriptors [`send_message`] puts in one message (one, but for the tests' malformed
/// messages).
const MAX_SEND_FDS: usize = 16;

/// A control buffer aligned for `cmsghdr`.
#[repr(C, align(8))]
struct ControlBuffer<const N: usize>([u8; N]);

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn os_error(op: &'static str) -> Error {
    Error::Os { op, code: errno() }
}

/// This process's effective uid.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The printable form of an abstract address (`@` for the leading NUL, as `ss` shows them).
fn display_address(address: &[u8]) -> String {
    format!("@{}", String::from_utf8_lossy(address))
}

/// The socket address of abstract `address`, with its length.
fn socket_address(address: &[u8]) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    if address.is_empty() || address.len() > MAX_ADDRESS_LEN {
        return Err(Error::InvalidArgument {
            name: "address",
            expected: "1 to 107 bytes",
        });
    }
    // SAFETY: sockaddr_un is plain data (an integer and a byte array): all zeroes is a value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &b) in sa.sun_path[1..].iter_mut().zip(address) {
        *dst = b as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + address.len();
    Ok((sa, len as libc::socklen_t))
}

/// A new non-blocking, close-on-exec `SOCK_SEQPACKET` Unix socket.
fn new_socket() -> Result<OwnedFd> {
    // SAFETY: socket takes no pointers; its result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(os_error("socket"));
    }
    // SAFETY: fd is a descriptor socket just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The uid of the process at the other end of connected socket `fd`, as of its `connect` (for
/// an accepted socket) or `listen` (for a connecting one).
fn peer_uid(fd: BorrowedFd<'_>) -> Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are live locals, writable for the size len states; the kernel writes
    // at most len bytes of credentials it took itself (a peer cannot choose them).
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(os_error("getsockopt(SO_PEERCRED)"));
    }
    Ok(cred.uid)
}

/// Sends one message of `data` with the descriptors `fds` on connected socket `conn`, without
/// blocking and without SIGPIPE. Returns the errno on failure.
fn send_message(conn: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> std::result::Result<(), i32> {
    if fds.len() > MAX_SEND_FDS {
        return Err(libc::EINVAL);
    }
    let mut control = ControlBuffer([0u8; SEND_CONTROL_LEN]);
    let fds_bytes = std::mem::size_of_val(fds) as u32;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data (integers and pointers): all zeroes (null pointers, zero
    // lengths) is a value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is arithmetic on its argument.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(fds_bytes) } as _;
        // SAFETY: msg_control points to `control`, 8-aligned and SEND_CONTROL_LEN (128) bytes
        // long, and msg_controllen (CMSG_SPACE of at most 16 descriptors, 80 bytes) fits in it,
        // so the first header and its data lie inside `control`.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fds_bytes) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                fds_bytes as usize,
            );
        }
    }
    loop {
        // SAFETY: msg points to iov (which points to `data`) and to `control`, all live and
        // readable for the lengths given for the whole call; the kernel only reads them.
        let n = unsafe {
            libc::sendmsg(
                conn.as_raw_fd(),
                &msg,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(());
        }
        match errno() {
            libc::EINTR => continue,
            code => return Err(code),
        }
    }
}

/// What one read of a connection found.
enum Received {
    /// A well-formed message.
    Message(u64, OwnedFd),
    /// A message of the wrong form, skipped (its descriptors closed).
    Malformed,
    /// Nothing to read now.
    Empty,
    /// The sender closed its end (or reset it): nothing more will come.
    HungUp,
}

/// The descriptors of every `SCM_RIGHTS` header of received `msg`, each owned once.
fn received_descriptors(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    if msg.msg_control.is_null() || msg.msg_controllen == 0 {
        return fds;
    }
    let start = msg.msg_control as usize;
    // `msg_controllen` is a `usize` with glibc and a `u32` with musl.
    #[allow(clippy::unnecessary_cast)]
    let end = start + msg.msg_controllen as usize;
    // SAFETY: msg_control and msg_controllen describe the control buffer the kernel just filled
    // (it lowered msg_controllen to what it wrote); CMSG_FIRSTHDR only reads msg's fields.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR / CMSG_NXTHDR return a header only if it lies inside
        // [msg_control, msg_control + msg_controllen), written by the kernel (a peer cannot
        // forge control headers: the kernel builds them).
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_DATA and CMSG_LEN are arithmetic on the header's address and a length.
            let (data, data_offset) = unsafe { (libc::CMSG_DATA(cmsg), libc::CMSG_LEN(0)) };
            let payload = (header.cmsg_len as usize).saturating_sub(data_offset as usize);
            // Never read past the buffer, whatever the header says.
            let room = end.saturating_sub(data as usize);
            let count = payload.min(room) / std::mem::size_of::<RawFd>();
            for i in 0..count {
                // SAFETY: the i-th descriptor lies inside the control buffer (count is bounded
                // by `room`); it may be unaligned, hence read_unaligned.
                let fd = unsafe { data.cast::<RawFd>().add(i).read_unaligned() };
                if fd >= 0 {
                    // SAFETY: the kernel installed fd in our table for this message alone
                    // (SCM_RIGHTS); nothing else owns it, and it is wrapped exactly once.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        // SAFETY: msg describes the kernel-filled buffer and cmsg is a header inside it;
        // CMSG_NXTHDR returns null rather than a header past the buffer's end.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    fds
}

/// Reads one message from accepted connection `conn`.
fn receive(conn: BorrowedFd<'_>) -> Result<Received> {
    // One byte more than a message, so that a longer one is seen even without MSG_TRUNC.
    let mut data = [0u8; MESSAGE_LEN + 1];
    let mut control = ControlBuffer([0u8; RECEIVE_CONTROL_LEN]);
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data (integers and pointers): all zeroes is a value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = RECEIVE_CONTROL_LEN as _;
    let n = loop {
        // SAFETY: msg points to iov (which points to `data`) and to `control`, live and writable
        // for the lengths given for the whole call; the kernel writes at most those lengths
        // whatever the peer sent.
        let n = unsafe {
            libc::recvmsg(
                conn.as_raw_fd(),
                &mut msg,
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
            )
        };
        if n >= 0 {
            break n as usize;
        }
        match errno() {
            libc::EINTR => continue,
            libc::EAGAIN => return Ok(Received::Empty),
            libc::ECONNRESET => return Ok(Received::HungUp),
            code => {
                return Err(Error::Os {
                    op: "recvmsg",
                    code,
                })
            }
        }
    };
    // Owned first, so that every early return below closes them.
    let mut fds = received_descriptors(&msg);
    if n == 0 && fds.is_empty() {
        // The end of the connection (a sender of this module never sends an empty message; one
        // that does loses its connection, and the descriptors queued behind it are closed).
        return Ok(Received::HungUp);
    }
    let truncated = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    if n != MESSAGE_LEN || truncated || fds.len() != 1 {
        return Ok(Received::Malformed);
    }
    let token = u64::from_le_bytes(data[..MESSAGE_LEN].try_into().expect("8 bytes"));
    Ok(Received::Message(token, fds.pop().expect("one descriptor")))
}

/// The receiving end: a listening `SOCK_SEQPACKET` socket bound to an abstract address, its
/// accepted connections, and the descriptors received and not yet taken.
pub struct Mailbox {
    listener: OwnedFd,
    connections: Vec<OwnedFd>,
    stash: HashMap<u64, OwnedFd>,
    euid: u32,
}

impl Mailbox {
    /// Binds abstract `address` (the bytes after the leading NUL, 1 to [`MAX_ADDRESS_LEN`]) with
    /// a non-blocking, close-on-exec socket, and listens. An address already bound is
    /// [`Error::AlreadyExists`] (named `@address`); a length out of range is
    /// [`Error::InvalidArgument`].
    pub fn bind(address: &[u8]) -> Result<Self> {
        let (sa, len) = socket_address(address)?;
        let listener = new_socket()?;
        // SAFETY: sa is a live, initialised sockaddr_un and len is at most its size.
        let r = unsafe {
            libc::bind(
                listener.as_raw_fd(),
                (&sa as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if r != 0 {
            return Err(match errno() {
                libc::EADDRINUSE => Error::AlreadyExists {
                    name: display_address(address),
                },
                code => Error::Os { op: "bind", code },
            });
        }
        // SAFETY: listen takes no pointers.
        if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
            return Err(os_error("listen"));
        }
        Ok(Self {
            listener,
            connections: Vec::new(),
            stash: HashMap::new(),
            euid: euid(),
        })
    }

    /// The descriptor sent with `token`, if it has arrived; never blocks. First accepts every
    /// pending connection (closing, unread, those of another uid) and reads every message
    /// available on every connection into the stash; then removes and returns `token`'s.
    ///
    /// An error (an `accept4` or `recvmsg` failure, such as a full descriptor table) is returned
    /// only when `token`'s descriptor was not found despite it.
    pub fn take(&mut self, token: u64) -> Result<Option<OwnedFd>> {
        let collected = self.collect();
        match self.stash.remove(&token) {
            Some(fd) => Ok(Some(fd)),
            None => collected.map(|()| None),
        }
    }

    /// Closes the stashed descriptors whose token `keep` rejects (those no record will ask for).
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        self.stash.retain(|&token, _| keep(token));
    }

    /// How many descriptors are stashed (received, not taken).
    pub fn stashed(&self) -> usize {
        self.stash.len()
    }

    /// How many accepted connections are open.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// Accepts every pending connection, then reads every connection; returns the first error,
    /// after doing all it could.
    fn collect(&mut self) -> Result<()> {
        let accepted = self.accept_pending();
        let mut first_error = None;
        let mut i = 0;
        while i < self.connections.len() {
            match self.drain(i) {
                Ok(true) => i += 1,
                Ok(false) => {
                    self.connections.swap_remove(i);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                    i += 1;
                }
            }
        }
        accepted.and(first_error.map_or(Ok(()), Err))
    }

    /// Accepts every pending connection of our uid; closes the others.
    fn accept_pending(&mut self) -> Result<()> {
        loop {
            // SAFETY: null address and length pointers are allowed (no address is written).
            let fd = unsafe {
                libc::accept4(
                    self.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                match errno() {
                    libc::EAGAIN => return Ok(()),
                    libc::EINTR | libc::ECONNABORTED => continue,
                    code => {
                        return Err(Error::Os {
                            op: "accept4",
                            code,
                        })
                    }
                }
            }
            // SAFETY: fd is a descriptor accept4 just returned, owned by nothing else.
            let conn = unsafe { OwnedFd::from_raw_fd(fd) };
            // A peer of another uid (or whose credentials cannot be read) is closed unread,
            // with every descriptor it queued.
            if peer_uid(conn.as_fd()).is_ok_and(|uid| uid == self.euid) {
                self.connections.push(conn);
            }
        }
    }

    /// Reads connection `i` until it is empty; false when it hung up.
    fn drain(&mut self, i: usize) -> Result<bool> {
        for _ in 0..MAX_READS_PER_CONNECTION {
            match receive(self.connections[i].as_fd())? {
                Received::Message(token, fd) => {
                    self.stash.insert(token, fd);
                }
                Received::Malformed => {}
                Received::Empty => return Ok(true),
                Received::HungUp => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// Why [`MailboxSender::send`] did not send.
#[derive(Debug)]
pub enum SendError {
    /// No mailbox listens at the address (refused, or the connection was reset and could not
    /// be made again): the receiver is gone or never bound it. The caller falls back.
    NoListener,
    /// The socket at the address belongs to another user; nothing was sent to it.
    ForeignListener {
        /// The listener's uid.
        uid: u32,
    },
    /// `peer_alive` said the receiver is dead while its queue was full.
    PeerGone,
    /// The deadline passed while the receiver's queue was full.
    Timeout,
    /// The address is out of range, or an OS call failed ([`Error::InvalidArgument`],
    /// [`Error::Os`]).
    Failed(Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoListener => f.write_str("no mailbox listens at the address"),
            Self::ForeignListener { uid } => {
                write!(f, "the mailbox at the address belongs to uid {uid}")
            }
            Self::PeerGone => f.write_str("the mailbox's process died"),
            Self::Timeout => f.write_str("timed out waiting for room in the mailbox"),
            Self::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SendError {}

impl From<Error> for SendError {
    fn from(e: Error) -> Self {
        Self::Failed(e)
    }
}

/// The sending end a producer keeps: one connection, re-made when the address changes or the
/// connection breaks.
#[derive(Default)]
pub struct MailboxSender {
    connection: Option<(Vec<u8>, OwnedFd)>,
}

impl MailboxSender {
    /// A sender with no connection yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `fd` with `token` to the mailbox at abstract `address`, connecting first if needed.
    /// Returns once the message is queued at the receiver (the receiver then owns a reference to
    /// the memory, whatever becomes of this process). While the receiver's queue is full it
    /// waits in slices of at most [`SEND_SLICE`], calling `peer_alive` after each; it gives up
    /// with [`SendError::PeerGone`] when that says false and with [`SendError::Timeout`] once
    /// `deadline` (if any) has passed.
    pub fn send(
        &mut self,
        address: &[u8],
        token: u64,
        fd: BorrowedFd<'_>,
        deadline: Option<Instant>,
        peer_alive: &dyn Fn() -> bool,
    ) -> std::result::Result<(), SendError> {
        let data = token.to_le_bytes();
        let mut fresh = false;
        loop {
            let connected =
                matches!(&self.connection, Some((bound, _)) if bound.as_slice() == address);
            if !connected {
                self.connection = None;
                let conn = connect(address, deadline, peer_alive)?;
                self.connection = Some((address.to_vec(), conn));
                fresh = true;
            }
            let conn = &self.connection.as_ref().expect("connected above").1;
            match send_message(conn.as_fd(), &data, &[fd.as_raw_fd()]) {
                Ok(()) => return Ok(()),
                Err(libc::EAGAIN) => wait_slice(Some(conn.as_fd()), deadline, peer_alive)?,
                // Too many descriptors in flight for this user: no readiness to poll for.
                Err(libc::ETOOMANYREFS) => wait_slice(None, deadline, peer_alive)?,
                Err(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ECONNREFUSED) => {
                    // The receiving end closed. A new connection is tried once: a new mailbox
                    // may listen at the address now.
                    self.connection = None;
                    if fresh {
                        return Err(SendError::NoListener);
                    }
                }
                Err(code) => {
                    return Err(Error::Os {
                        op: "sendmsg",
                        code,
                    }
                    .into())
                }
            }
        }
    }
}

/// One bounded wait of a sender: for `conn` to be writable (or a short sleep without one), then
/// the checks of `deadline` and `peer_alive`.
fn wait_slice(
    conn: Option<BorrowedFd<'_>>,
    deadline: Option<Instant>,
    peer_alive: &dyn Fn() -> bool,
) -> std::result::Result<(), SendError> {
    let mut slice = match conn {
        Some(_) => SEND_SLICE,
        None => Duration::from_millis(1),
    };
    if let Some(deadline) = deadline {
        let now = Instant::now();
        if now >= deadline {
            return Err(SendError::Timeout);
        }
        slice = slice.min(deadline - now);
    }
    match conn {
        Some(conn) => {
            let mut pfd = libc::pollfd {
                fd: conn.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // Rounded up, so that a wait never spins with a zero timeout.
            let ms = slice.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
            // SAFETY: pfd is a live pollfd and the count is 1. Its result (ready, timed out,
            // interrupted) needs no handling: the caller retries the send either way.
            unsafe { libc::poll(&mut pfd, 1, ms) };
        }
        None => std::thread::sleep(slice),
    }
    if !peer_alive() {
        return Err(SendError::PeerGone);
    }
    Ok(())
}

/// Connects to the mailbox at `address` and checks that its listener is of our uid. Waits (as
/// [`wait_slice`]) while the listener's backlog is full.
fn connect(
    address: &[u8],
    deadline: Option<Instant>,
    peer_alive: &dyn Fn() -> bool,
) -> std::result::Result<OwnedFd, SendError> {
    let (sa, len) = socket_address(address)?;
    loop {
        let sock = new_socket()?;
        // SAFETY: sa is a live, initialised sockaddr_un and len is at most its size.
        let r = unsafe {
            libc::connect(
                sock.as_raw_fd(),
                (&sa as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if r != 0 {
            match errno() {
                libc::ECONNREFUSED | libc::ENOENT => return Err(SendError::NoListener),
                // The backlog is full (or the call was interrupted): a new socket tries again.
                libc::EAGAIN | libc::EINTR => {
                    wait_slice(None, deadline, peer_alive)?;
                    continue;
                }
                code => {
                    return Err(Error::Os {
                        op: "connect",
                        code,
                    }
                    .into())
                }
            }
        }
        let uid = peer_uid(sock.as_fd())?;
        if uid != euid() {
            return Err(SendError::ForeignListener { uid });
        }
        return Ok(sock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh abstract address for one test.
    fn address(tag: &str) -> Vec<u8> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        format!(
            "shmpipe-test-mailbox-{}-{tag}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
        .into_bytes()
    }

    /// A memfd named `name` holding `bytes`.
    fn memfd(name: &str, bytes: &[u8]) -> OwnedFd {
        let cname = std::ffi::CString::new(name).unwrap();
        // SAFETY: cname is a live NUL-terminated string.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: fd was just returned by memfd_create and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut f = File::from(fd);
        f.write_all(bytes).unwrap();
        f.into()
    }

    /// The whole contents of the memory behind `fd`.
    fn contents(fd: &OwnedFd) -> Vec<u8> {
        let f = File::from(fd.try_clone().unwrap());
        let mut buf = vec![0; f.metadata().unwrap().len() as usize];
        f.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    /// How many descriptors of this process refer to the memfd named `name` (other tests of this
    /// binary open descriptors at the same time, so a plain count of /proc/self/fd would not do).
    fn open_links(name: &str) -> usize {
        let wanted = format!("/memfd:{name} (deleted)");
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.as_os_str() == wanted.as_str())
            .count()
    }

    /// A unique memfd name for one test.
    fn unique(tag: &str) -> String {
        String::from_utf8(address(tag)).unwrap()
    }

    fn alive() -> bool {
        true
    }

    #[test]
    fn fd_mailbox_round_trip_carries_a_memfds_bytes() {
        let addr = address("round-trip");
        let mut mailbox = Mailbox::bind(&addr).unwrap();
        let pattern: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let blob = memfd("round-trip", &pattern);
        let mut sender = MailboxSender::new();
        sender.send(&addr, 7, blob.as_fd(), None, &alive).unwrap();
        drop(blob);
        let got = mailbox.take(7).unwrap().expect("token 7 arrived");
        assert_eq!(contents(&got), pattern);
        assert!(mailbox.take(7).unwrap().is_none(), "taken twice");
    }

    #[test]
    fn fd_mailbox_tokens_are_taken_in_any_order() {
        let addr = address("order");
        let mut mailbox = Mailbox::bind(&addr).unwrap();
        let mut sender = MailboxSender::new();
        for (token, text) in [(1, "one"), (2, "two"), (3, "three")] {
            let blob = memfd(text, text.as_bytes());
            sender
                .send(&addr, token, blob.as_fd(), None, &alive)
                .unwrap();
        }
        for (token, text) in [(3, "three"), (1, "one"), (2, "two")] {
            let got = mailbox.take(token).unwrap().expect("arrived");
            assert_eq!(contents(&got), text.as_bytes(), "token {token}");
        }
        assert_eq!(mailbox.stashed(), 0);
    }

    #[test]
    fn fd_mailbox_take_of_an_absent_token_returns_none_at_once() {
        let addr = address("absent");
        let mut mailbox = Mailbox::bind(&addr).unwrap();
        let t = Instant::now();
        assert!(mailbox.take(42).unwrap().is_none());
        let mut sender = MailboxSender::new();
        let blob = memfd("absent", b"x");
        sender.send(&addr, 1, blob.as_fd(), None, &alive).unwrap();
        assert!(mailbox.take(2).unwrap().is_none());
        assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
        assert_eq!(
            mailbox.stashed(),
            1,
            "token 1 stashed while 2 was asked for"
        );
        assert!(mailbox.take(1).unwrap().is_some());
    }

    #[test]
    fn fd_mailbox_malformed_messages_are_skipped_and_their_descriptors_closed() {
        let addr = address("malformed");
        let mut mailbox = Mailbox::bind(&addr).unwrap();
        let conn = connect(&addr, None, &alive).unwrap();
        let names: Vec<String> = (0..20).map(|i| unique(&format!("bad{i}"))).collect();
        let fds: Vec<OwnedFd> = names.iter().map(|n| memfd(n, b"bad")).collect();
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let token = 5u64.to_le_bytes();
        // 3 bytes with a descriptor.
        send_message(conn.as_fd(), &token[..3], &raw[0..1]).unwrap();
        // 8 bytes without one.
        send_message(conn.as_fd(), &token, &[]).unwrap();
        // 8 bytes with two.
        send_message(conn.as_fd(), &token, &raw[1..3]).unwrap();
        // 12 bytes with one.
        send_message(conn.as_fd(), &[5; 12], &raw[3..4]).unwrap();
        // 0 bytes with one.
        send_message(conn.as_fd(), &[], &raw[4..5]).unwrap();
        // 8 bytes with 16, more than the receiver's buffer holds (MSG_CTRUNC).
        send_message(conn.as_fd(), &token, &raw[4..20]).unwrap();
        // Then a good one, from the same connection.
        let good_name = unique("good");
        let good = memfd(&good_name, b"good");
        send_message(conn.as_fd(), &9u64.to_le_bytes(), &[good.as_raw_fd()]).unwrap();
        drop(fds);
        drop(good);
        for name in &names {
            assert_eq!(open_links(name), 0, "{name} was open before any take");
        }

        assert!(
            mailbox.take(5).unwrap().is_none(),
            "a malformed message was taken"
        );
        assert_eq!(mailbox.stashed(), 1, "only the good message is stashed");
        assert_eq!(open_links(&good_name), 1, "the stashed descriptor is open");
        for name in &names {
            assert_eq!(
                open_links(name),
                0,
                "a descriptor of a malformed message leaked"
            );
        }
        let got = mailbox
            .take(9)
            .unwrap()
            .expect("the good message after the bad ones");
        assert_eq!(contents(&got), b"good");
        assert_eq!(mailbox.connections(), 1, "the connection stays open");
    }

    #[test]
    fn fd_mailbox_a_full_queue_makes_send_wait_until_room_deadline_or_peer_death() {
        let addr = address("full");
        let mut mailbox = Mailbox::bind(&addr).unwrap();
        let mut sender = MailboxSender::new();
        let blob = memfd("full", b"x");
        // Fill the queue: a deadline already passed sends only what fits at once.
        let mut queued = 0u64;
        loop {
            match sender.send(&addr, queued, blob.as_fd(), Some(Instant::now()), &alive) {
                Ok(()) => queued += 1,
                Err(SendError::Timeout) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(queued < 100_000, "the queue never filled");
        }
        let qlen: u64 = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        println!(
            "fd_mailbox: {queued} messages queued on one connection before EAGAIN \
             (net.unix.max_dgram_qlen = {qlen})"
        );
        assert!(
            queued > qlen,
            "{queued} queued: bounded by max_dgram_qlen {qlen}"
        );

        // A deadline ends the wait.
        let t = Instant::now();
        let deadline = t + Duration::from_millis(300);
        let r = sender.send(&addr, queued, blob.as_fd(), Some(deadline), &alive);
        assert!(matches!(r, Err(SendError::Timeout)), "{r:?}");
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

        // A dead peer ends it after one slice.
        let t = Instant::now();
        let calls = std::cell::Cell::new(0);
        let dead = || {
            calls.set(calls.get() + 1);
            false
        };
        let r = sender.send(&addr, queued, blob.as_fd(), None, &dead);
        assert!(matches!(r, Err(SendError::PeerGone)), "{r:?}");
        assert_eq!(calls.get(), 1);
        assert!(
            t.elapsed() < SEND_SLICE + Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );

        // Room made by the receiver ends it with the message sent.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            for token in 0..queued {
                assert!(mailbox.take(token).unwrap().is_some(), "token {token}");
            }
            mailbox
        });
        let t = Instant::now();
        let deadline = Some(t + Duration::from_secs(10));
        sender
            .send(&addr, queued, blob.as_fd(), deadline, &alive)
            .unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        let mut mailbox = reader.join().unwrap();
        assert!(mailbox.take(queued).unwrap().is_some());
    }

    #[test]
    fn fd_mailbox_send_and_take_cost() {
        let addr = address("cost");
        let mut mailbox = Mailbox::bind(&addr).unwrap();
        let mut sender = MailboxSender::new();
        let blob = memfd("cost", &[7; 4096]);
        let rounds = 2000u32;
        let (mut sending, mut taking) = (Duration::ZERO, Duration::ZERO);
        for token in 0..u64::from(rounds) {
            let t = Instant::now();
            sender
                .send(&addr, token, blob.as_fd(), None, &alive)
                .unwrap();
            let sent = Instant::now();
            let got = mailbox.take(token).unwrap().expect("arrived");
            drop(got);
            sending += sent - t;
            taking += sent.elapsed();
        }
        println!(
            "fd_mailbox: per blob, send {:?} + take (and close) {:?} ({rounds} rounds)",
            sending / rounds,
            taking / rounds
        );
        assert_eq!(mailbox.stashed(), 0);
    }

    #[test]
    fn fd_mailbox_bind_rejects_an_address_in_use_and_bad_lengths() {
        let addr = address("in-use");
        let first = Mailbox::bind(&addr).unwrap();
        match Mailbox::bind(&addr) {
            Err(Error::AlreadyExists { name }) => {
                assert_eq!(name.as_bytes(), [b"@", addr.as_slice()].concat());
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        drop(first);
        let _again = Mailbox::bind(&addr).expect("an abstract address is free once closed");
        for len in [0, MAX_ADDRESS_LEN + 1] {
            let r = Mailbox::bind(&vec![b'a'; len]).map(|_| ());
            assert!(
                matches!(r, Err(Error::InvalidArgument { .. })),
                "{len}: {r:?}"
            );
        }
        let longest = [address("max"), vec![b'x'; MAX_ADDRESS_LEN]].concat();
        Mailbox::bind(&longest[..MAX_ADDRESS_LEN]).unwrap();
    }

    #[test]
    fn fd_mailbox_no_listener_is_an_answer_and_a_new_listener_is_found() {
        let addr = address("none");
        let blob = memfd("none", b"x");
        let mut sender = MailboxSender::new();
        let r = sender.send(&addr, 1, blob.as_fd(), None, &alive);
        assert!(matches!(r, Err(SendError::NoListener)), "{r:?}");

        // The connection to a closed mailbox is re-made to a new one at the same address.
        let first = Mailbox::bind(&addr).unwrap();
        sender.send(&addr, 1, blob.as_fd(), None, &alive).unwrap();
        drop(first);
        let mut second = Mailbox::bind(&addr).unwrap();
        sender.send(&addr, 2, blob.as_fd(), None, &alive).unwrap();
        assert!(second.take(2).unwrap().is_some());
        assert!(
            second.take(1).unwrap().is_none(),
            "died with the first mailbox"
        );

        // With no new mailbox, a broken connection is NoListener.
        drop(second);
        let r = sender.send(&addr, 3, blob.as_fd(), None, &alive);
        assert!(matches!(r, Err(SendError::NoListener)), "{r:?}");
    }

    #[test]
    fn fd_mailbox_retain_closes_the_rejected_descriptors() {
        let addr = address("retain");
        let mut mailbox = Mailbox::bind(&addr).unwrap();
        let mut sender = MailboxSender::new();
        let names: Vec<String> = (1..=3).map(|i| unique(&format!("retain{i}"))).collect();
        for (token, name) in (1..=3).zip(&names) {
            let blob = memfd(name, b"r");
            sender
                .send(&addr, token, blob.as_fd(), None, &alive)
                .unwrap();
        }
        assert!(mailbox.take(99).unwrap().is_none());
        assert_eq!(mailbox.stashed(), 3);
        mailbox.retain(|token| token == 2);
        assert_eq!(mailbox.stashed(), 1);
        assert_eq!(open_links(&names[0]), 0);
        assert_eq!(open_links(&names[1]), 1);
        assert_eq!(open_links(&names[2]), 0);
        assert!(mailbox.take(1).unwrap().is_none());
        assert!(mailbox.take(2).unwrap().is_some());
    }

    #[test]
    fn fd_mailbox_a_hung_up_connection_is_read_to_its_end_then_dropped() {
        let addr = address("hangup");
        let mut mailbox = Mailbox::bind(&addr).unwrap();
        let mut sender = MailboxSender::new();
        let blob = memfd("hangup", b"h");
        sender.send(&addr, 1, blob.as_fd(), None, &alive).unwrap();
        sender.send(&addr, 2, blob.as_fd(), None, &alive).unwrap();
        drop(sender);
        assert!(mailbox.take(2).unwrap().is_some());
        assert_eq!(mailbox.connections(), 0);
        assert!(mailbox.take(1).unwrap().is_some());
    }
}
