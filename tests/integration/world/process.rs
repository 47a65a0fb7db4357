//! Child processes that cannot outlive the test process, plus port helpers.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, and libtest runs
//! every test on a short-lived thread. So every child is forked by one spawner thread that
//! lives as long as the process; the signal then fires exactly when the process dies
//! (panic, abort, SIGKILL from a timeout). An `atexit` hook also kills and reaps the children
//! on a normal exit and removes the world's temp dirs, which live in statics that never drop.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Pids of live children, killed by the atexit hook.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Directories removed by the atexit hook, after the children are gone.
static CLEANUP_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("world-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_deathsig(&mut cmd));
                }
                // The sender lives in a static, so the loop never ends; if it ever did, this
                // thread must still not exit or every child would get SIGKILL.
                loop {
                    std::thread::park();
                }
            })
            .expect("start the world-spawner thread");
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe { libc::atexit(cleanup_at_exit) };
        Mutex::new(tx)
    })
}

fn spawn_with_deathsig(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let sig = libc::SIGKILL as libc::c_ulong;
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

extern "C" fn cleanup_at_exit() {
    let pids = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in pids {
        reap(pid as libc::pid_t);
    }
    let dirs = std::mem::take(&mut *CLEANUP_DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Kill and reap `pid` if it is still our unreaped child. `waitpid` answers ECHILD for a pid
/// that was already reaped (or recycled by an unrelated process), so we never kill a stranger.
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: plain syscalls on a pid value.
    unsafe {
        if libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, &mut status, 0);
        }
    }
}

/// A child started by [`spawn_child`]. Derefs to [`Child`]; killed and reaped on drop, and at
/// process exit if it is never dropped (e.g. held in a static).
pub struct ManagedChild {
    child: Child,
}

impl Deref for ManagedChild {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for ManagedChild {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = self.child.wait();
        CHILDREN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != pid);
    }
}

/// Start `cmd` so that it dies with the test process. Configure stdio, env and args on `cmd`
/// first. Panics if the program cannot be started.
pub fn spawn_child(cmd: Command) -> ManagedChild {
    let program = cmd.get_program().to_string_lossy().into_owned();
    try_spawn_child(cmd).unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// Like [`spawn_child`] but returns the spawn error.
pub fn try_spawn_child(cmd: Command) -> io::Result<ManagedChild> {
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .expect("world-spawner thread is gone");
    let child = reply_rx.recv().expect("world-spawner thread is gone")?;
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(child.id());
    Ok(ManagedChild { child })
}

/// Remove `dir` (recursively) when the test process exits normally, unless
/// `HUBFERRY_KEEP_WORLD` is set (to read logs after a failure).
/// A `hubferry.toml` holding `toml`, in a scratch directory removed at exit.
pub fn config_file(toml: &str) -> PathBuf {
    let dir = tempfile::tempdir().expect("create a scratch dir").keep();
    remove_at_exit(dir.clone());
    let file = dir.join("hubferry.toml");
    std::fs::write(&file, toml).expect("write hubferry.toml");
    file
}

pub fn remove_at_exit(dir: PathBuf) {
    if std::env::var_os("HUBFERRY_KEEP_WORLD").is_some() {
        eprintln!("HUBFERRY_KEEP_WORLD: keeping {}", dir.display());
        return;
    }
    spawner(); // make sure the atexit hook is installed
    CLEANUP_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir);
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; there is a small race
/// with other processes, which is why callers wait for their server to answer).
///
/// Ports come from below Linux's ephemeral range (32768–60999): a port picked from that range
/// could be taken, before the server binds it, as the local port of one of the many client
/// sockets tests open. Each test process starts at its own offset (by pid) and never hands out
/// a port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {FIRST}..{}", FIRST + SPAN)
}

/// Poll until something accepts TCP connections on `addr`; false after `timeout`.
pub fn wait_for_port(addr: impl ToSocketAddrs, timeout: Duration) -> bool {
    let addrs: Vec<SocketAddr> = match addr.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(_) => return false,
    };
    super::wait_until(timeout, || {
        addrs
            .iter()
            .any(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok())
    })
}

/// Path of a required external tool; panics (never skips) when it is missing.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // nginx lives in /usr/sbin, which is not on every user's PATH.
    let extra = [PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")];
    std::env::split_paths(&path)
        .chain(extra)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "integration tests need `{name}` (docker-registry, nginx, skopeo, ...): \
                 run `make test`, which installs them"
            )
        })
}

/// Linger 0: closing the socket sends a reset instead of a FIN, as a broken link or a client
/// killed mid-download does.
pub fn reset_on_close(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this process owns, with a correctly sized value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
