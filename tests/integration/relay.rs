//! A fault-injecting TCP relay, put between hubferry and an upstream (the CDN or the registry):
//! real sockets, real resets and stalls, on a per-connection plan. It also records when the
//! hubferry side of each connection closed, to show that a client's departure reaches the
//! upstream.

use std::{
    collections::VecDeque,
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::world;

/// A fault for the relay to inject. The plan is a queue: the first connection whose answer
/// bytes (upstream → hubferry, heads included, counted per connection) reach the head fault's
/// count takes that fault off the queue and suffers it. Connections that stay below it (small
/// answers such as manifests) pass untouched and leave the plan as it was.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Passes this many bytes, then resets the connection (RST, as a broken link does).
    CutAfter(u64),
    /// Passes this many bytes, then sends nothing more (holds the connection open).
    StallAfter(u64),
}

impl Fault {
    fn at(self) -> u64 {
        match self {
            Fault::CutAfter(n) | Fault::StallAfter(n) => n,
        }
    }
}

#[derive(Default)]
struct Shared {
    /// Faults still to come, in order.
    plan: VecDeque<Fault>,
    /// When the hubferry side of each connection was seen closed, by connection number.
    closed: Vec<(usize, Instant)>,
    /// Answer bytes passed, per connection.
    passed: Vec<u64>,
}

pub struct Relay {
    /// `127.0.0.1:PORT` to point hubferry (or the registry's redirects) at.
    pub addr: String,
    shared: Arc<Mutex<Shared>>,
}

impl Relay {
    /// Relays every connection to `target` (`host:port`), injecting the faults of `plan`.
    pub fn start(target: &str, plan: &[Fault]) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Mutex::new(Shared {
            plan: plan.iter().copied().collect(),
            ..Shared::default()
        }));
        let target = target.to_owned();
        let for_accept = shared.clone();
        std::thread::spawn(move || {
            for (number, down) in listener.incoming().flatten().enumerate() {
                for_accept.lock().unwrap().passed.push(0);
                let shared = for_accept.clone();
                let target = target.clone();
                std::thread::spawn(move || relay_one(number, down, &target, &shared));
            }
        });
        Relay { addr, shared }
    }

    /// How many connections were made to the relay.
    pub fn connections(&self) -> usize {
        self.shared.lock().unwrap().passed.len()
    }

    /// Answer bytes passed on connection `number`.
    pub fn passed(&self, number: usize) -> u64 {
        self.shared.lock().unwrap().passed[number]
    }

    /// When hubferry closed connection `number`, waiting up to `timeout` for it.
    pub fn wait_closed(&self, number: usize, timeout: Duration) -> Option<Instant> {
        // The relay notes the moment itself: the wait's pace does not blur it.
        world::wait_for(timeout, || {
            self.shared
                .lock()
                .unwrap()
                .closed
                .iter()
                .find(|(n, _)| *n == number)
                .map(|(_, at)| *at)
        })
    }
}

fn relay_one(number: usize, down: TcpStream, target: &str, shared: &Mutex<Shared>) {
    let Ok(up) = TcpStream::connect(target) else {
        return;
    };
    let _ = up.set_nodelay(true);
    let _ = down.set_nodelay(true);
    // Requests go up untouched; their end (hubferry closing) is what is recorded.
    let (mut down_reader, mut up_writer) = (down.try_clone().unwrap(), up.try_clone().unwrap());
    let closed_flag = Arc::new(Mutex::new(None::<Instant>));
    let closed_by_down = closed_flag.clone();
    let requests = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match down_reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if up_writer.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        *closed_by_down.lock().unwrap() = Some(Instant::now());
        let _ = up_writer.shutdown(Shutdown::Both);
    });

    let (mut up_reader, mut down_writer) = (up, down);
    let mut passed = 0u64;
    let mut buf = [0u8; 64 * 1024];
    let fault = loop {
        // Read no further than the next fault's count, and take the fault once reached.
        let room = {
            let mut shared = shared.lock().unwrap();
            match shared.plan.front().map(|f| f.at()) {
                Some(at) if passed >= at => break shared.plan.pop_front(),
                Some(at) => (at - passed).min(buf.len() as u64) as usize,
                None => buf.len(),
            }
        };
        match up_reader.read(&mut buf[..room]) {
            Ok(0) | Err(_) => break None,
            Ok(n) => {
                if down_writer.write_all(&buf[..n]).is_err() {
                    break None;
                }
                passed += n as u64;
                shared.lock().unwrap().passed[number] = passed;
            }
        }
    };
    match fault {
        Some(Fault::CutAfter(_)) => {
            // Linger 0: the last close sends a reset, as a broken long-haul link looks. The
            // request side holds a copy of the socket: stop it first, then close.
            crate::world::reset_on_close(&down_writer);
            let _ = up_reader.shutdown(Shutdown::Both);
            let _ = down_writer.shutdown(Shutdown::Read);
            let _ = requests.join();
            drop(down_writer);
            return;
        }
        Some(Fault::StallAfter(_)) => {
            // Hold the connection open and silent until hubferry gives up on it.
        }
        None => {
            let _ = down_writer.shutdown(Shutdown::Write);
        }
    }
    let _ = requests.join();
    let at = closed_flag.lock().unwrap().unwrap_or_else(Instant::now);
    shared.lock().unwrap().closed.push((number, at));
}
