//! Test peer for the descriptor mailbox (`shmpipe_core::fd_mailbox`): plays a producer that hands
//! over a blob's memory and exits, a consumer that is killed, or another user's process
//! (`crates/test-peer/tests/fd_mailbox.rs`). Not part of the library's API.
//!
//! Roles (ADDRESS is the abstract address without its leading NUL):
//! - `send ADDRESS TOKEN MIB`: makes a memfd of MIB MiB holding pattern message TOKEN of
//!   producer 1, sends it with TOKEN through a `MailboxSender`, closes it, prints `sent` or
//!   `error KIND` (`no-listener`, `foreign-listener uid N`, or the error) and exits 0.
//! - `send-unchecked ADDRESS TOKEN`: the same with a 1 MiB memfd over a socket of its own, without
//!   checking whose the listener is (as a hostile process would); prints `sent` or
//!   `error ERRNO`.
//! - `hold ADDRESS`: binds a mailbox at ADDRESS, prints `bound` and sleeps until killed, taking
//!   nothing.
//! - `fill ADDRESS`: binds a mailbox at ADDRESS and sends it one memfd again and again with a
//!   deadline already passed, taking nothing, until a send fails; prints `queued N` and the
//!   failure (`timeout`, or `error ERROR`).

#[cfg(target_os = "linux")]
fn main() {
    use shmpipe_core::fd_mailbox::{Mailbox, MailboxSender, SendError};
    use shmpipe_test_peer::memfd;
    use shmpipe_test_peer::peer_io::{arg, say};
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    let args: Vec<String> = std::env::args().skip(1).collect();
    let role: String = arg(&args, 0);
    let address: String = arg(&args, 1);
    let address = address.as_bytes();
    match role.as_str() {
        "send" => {
            let token: u64 = arg(&args, 2);
            let mib: usize = arg(&args, 3);
            let blob = memfd::filled("mailbox-peer", mib << 20, 1, token);
            let deadline = Some(Instant::now() + Duration::from_secs(10));
            let r = MailboxSender::new().send(address, token, blob.as_fd(), deadline, &|| true);
            drop(blob);
            match r {
                Ok(()) => say("sent"),
                Err(SendError::NoListener) => say("error no-listener"),
                Err(SendError::ForeignListener { uid }) => {
                    say(&format!("error foreign-listener uid {uid}"))
                }
                Err(e) => say(&format!("error {e}")),
            }
        }
        "send-unchecked" => {
            let token: u64 = arg(&args, 2);
            let blob = memfd::filled("mailbox-peer-unchecked", 1 << 20, 1, token);
            match unchecked::send(address, token, blob.as_fd()) {
                Ok(()) => say("sent"),
                Err(code) => say(&format!("error {code}")),
            }
        }
        "hold" => {
            let _mailbox = Mailbox::bind(address).unwrap();
            say("bound");
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        "fill" => {
            let _mailbox = Mailbox::bind(address).unwrap();
            let blob = memfd::filled("mailbox-peer-fill", 4096, 1, 0);
            let mut sender = MailboxSender::new();
            let mut queued = 0u64;
            let failure = loop {
                match sender.send(address, queued, blob.as_fd(), Some(Instant::now()), &|| {
                    true
                }) {
                    Ok(()) => queued += 1,
                    Err(SendError::Timeout) => break "timeout".to_owned(),
                    Err(e) => break format!("error {e}"),
                }
            };
            say(&format!("queued {queued}"));
            say(&failure);
        }
        other => panic!("unknown role {other}"),
    }
}

/// A sender that checks nothing about the listener: what another user's process may do.
#[cfg(target_os = "linux")]
mod unchecked {
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Connects to abstract `address` and sends `token` with `fd`; the errno on failure.
    pub fn send(address: &[u8], token: u64, fd: BorrowedFd<'_>) -> Result<(), i32> {
        assert!(!address.is_empty() && address.len() < 108);
        // SAFETY: socket takes no pointers; its result is checked before use.
        let sock = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0) };
        if sock < 0 {
            return Err(errno());
        }
        // SAFETY: sock was just returned by socket and is owned by nothing else.
        let sock = unsafe { OwnedFd::from_raw_fd(sock) };
        // SAFETY: sockaddr_un is plain data: all zeroes is a value.
        let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (dst, &b) in sa.sun_path[1..].iter_mut().zip(address) {
            *dst = b as libc::c_char;
        }
        let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + address.len();
        // SAFETY: sa is a live sockaddr_un and len (checked above) is at most its size.
        let r = unsafe {
            libc::connect(
                sock.as_raw_fd(),
                (&sa as *const libc::sockaddr_un).cast(),
                len as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(errno());
        }
        let data = token.to_le_bytes();
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut control = [0u64; 4];
        // SAFETY: msghdr is plain data: all zeroes is a value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is arithmetic.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
        // SAFETY: the control buffer (32 bytes, 8-aligned) holds CMSG_SPACE(4) = 24 bytes: one
        // header and one descriptor, written inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
            libc::CMSG_DATA(cmsg)
                .cast::<libc::c_int>()
                .write_unaligned(fd.as_raw_fd());
        }
        // SAFETY: msg points to iov (to `data`) and `control`, live and readable for the call.
        if unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) } < 0 {
            return Err(errno());
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    panic!("shmpipe-mailbox-peer runs on Linux only");
}
