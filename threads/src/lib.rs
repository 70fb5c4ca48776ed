//! The threads connections run on: one single-threaded tokio runtime per thread, each
//! connection on one of them from accept to close, as each Nginx worker runs its own.
//!
//! A listener accepts on the main runtime and hands each socket to the thread with the fewest
//! of its open connections ([`Spread`]); the socket is registered with that thread's reactor
//! and its task never moves. On a work-stealing runtime a ready socket wakes one worker, which
//! wakes a parked sibling to steal the task it just queued: a cross-core wake-up (a futex call
//! and an inter-processor interrupt) for work one thread could do. Live streams are long and
//! few per core, so a fixed placement costs no balance worth having.
//!
//! Each side spreads its connections on its own (RTMP and RTMPS share one [`Spread`], HTTP and
//! HTTPS another): publishers, which cost the most, are shared evenly whatever the viewers
//! do. Tasks a connection spawns (callbacks, pushes, players) run on its thread too and are
//! not counted; a push kept across a publisher's reconnect stays where it was spawned.
//!
//! The threads run until [`ConnectionThreads::stop`], which the server calls once every
//! listener has drained: each runtime is dropped, which waits for its blocking work (a
//! recording's last writes).

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::warn;

/// The most connection threads: more than any machine this runs on has cores, and a bound on
/// what `--connection-threads` can start.
pub const MAX_THREADS: u16 = 1024;

/// Single-threaded runtimes, one per thread, that run until [`Self::stop`].
#[derive(Debug)]
pub struct ConnectionThreads {
    handles: Box<[Handle]>,
    /// Each thread's stop signal and handle, taken by [`Self::stop`].
    running: Mutex<Vec<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

/// How many threads `start(requested)` starts: at least one, at most [`MAX_THREADS`].
fn thread_count(requested: usize) -> usize {
    requested.clamp(1, usize::from(MAX_THREADS))
}

impl ConnectionThreads {
    /// Starts `count` threads (at least one, at most [`MAX_THREADS`]), each running a
    /// single-threaded runtime with IO and timers.
    ///
    /// # Errors
    ///
    /// When a thread or its runtime cannot be created (out of memory, file descriptors or
    /// thread ids); the threads already started then stop.
    pub fn start(count: usize) -> io::Result<Arc<Self>> {
        let count = thread_count(count);
        // On an error, dropping `running` drops the stop signals: the threads started end.
        let (mut handles, mut running) = (Vec::with_capacity(count), Vec::with_capacity(count));
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new().name(format!("connections-{index}")).spawn(
                move || {
                    // Dropped or sent, the signal ends the wait; dropping the runtime cancels
                    // what is left and waits for its blocking tasks.
                    let _ = runtime.block_on(stopped);
                },
            )?;
            handles.push(handle);
            running.push((stop, thread));
        }
        Ok(Arc::new(Self { handles: handles.into_boxed_slice(), running: Mutex::new(running) }))
    }

    /// Stops every thread and returns when all have ended: the tasks still on them are
    /// cancelled and their blocking work (a recording's writer) is waited for. Blocks: call
    /// it off the async runtime, after the listeners have drained. Connections handed over
    /// afterwards are dropped at once.
    pub fn stop(&self) {
        let running =
            std::mem::take(&mut *self.running.lock().unwrap_or_else(PoisonError::into_inner));
        let threads: Vec<JoinHandle<()>> = running
            .into_iter()
            .map(|(stop, thread)| {
                let _ = stop.send(());
                thread
            })
            .collect();
        for thread in threads {
            if thread.join().is_err() {
                warn!("a connection thread panicked");
            }
        }
    }

    /// How many threads there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never: there is at least one thread.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

/// Where one listener's connections run: on [`ConnectionThreads`], each on the thread with
/// the fewest of this listener's open connections, or without them on the runtime that
/// spawns them (tests, and `--connection-threads 0`).
#[derive(Debug, Clone)]
pub struct Spread {
    threads: Option<Arc<ConnectionThreads>>,
    /// This listener's open connections on each thread.
    open: Arc<[AtomicUsize]>,
}

impl Spread {
    /// Connections run on the runtime that spawns them.
    #[must_use]
    pub fn here() -> Self {
        Self { threads: None, open: Arc::new([]) }
    }

    /// Connections run on `threads`, this listener's counted apart from every other's.
    #[must_use]
    pub fn over(threads: &Arc<ConnectionThreads>) -> Self {
        let open = (0..threads.len()).map(|_| AtomicUsize::new(0)).collect();
        Self { threads: Some(Arc::clone(threads)), open }
    }

    /// Open connections on each thread (empty without threads).
    #[must_use]
    pub fn open(&self) -> Vec<usize> {
        self.open.iter().map(|n| n.load(Ordering::Relaxed)).collect()
    }

    /// Runs `connection` with `socket` as a task of `set`: on the least-loaded thread, with
    /// the socket registered there, or here. A socket that cannot move is closed with a log
    /// line (it cannot happen while the runtimes have IO enabled, which they all do).
    pub fn spawn<F, Fut>(&self, set: &mut JoinSet<()>, socket: TcpStream, connection: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(threads) = &self.threads else {
            set.spawn(connection(socket));
            return;
        };
        let index = self.least_loaded();
        let Some(handle) = threads.handles.get(index) else {
            set.spawn(connection(socket));
            return;
        };
        let socket = match socket.into_std() {
            Ok(socket) => socket,
            Err(e) => return warn!(error = %e, "could not hand a connection to its thread"),
        };
        let open = Placed::new(Arc::clone(&self.open), index);
        set.spawn_on(
            async move {
                let _open = open;
                match TcpStream::from_std(socket) {
                    Ok(socket) => connection(socket).await,
                    Err(e) => warn!(error = %e, "could not register a connection on its thread"),
                }
            },
            handle,
        );
    }

    /// The thread with the fewest open connections, the first of equals. Listeners accept
    /// one connection at a time, so the count cannot move between the choice and the
    /// increment in [`Placed::new`] but by connections closing.
    fn least_loaded(&self) -> usize {
        (0..self.open.len())
            .min_by_key(|&i| self.open.get(i).map_or(usize::MAX, |n| n.load(Ordering::Relaxed)))
            .unwrap_or(0)
    }
}

/// One open connection in its thread's count, taken out when the task ends (or is aborted).
struct Placed {
    open: Arc<[AtomicUsize]>,
    index: usize,
}

impl Placed {
    fn new(open: Arc<[AtomicUsize]>, index: usize) -> Self {
        if let Some(n) = open.get(index) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        Self { open, index }
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if let Some(n) = self.open.get(self.index) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::{mpsc, oneshot};

    /// Accepts `count` connections through `spread`; each reports its thread's name, then
    /// holds its connection until `release` fires.
    async fn accept_into(
        spread: &Spread,
        count: usize,
    ) -> (JoinSet<()>, Vec<String>, Vec<TcpStream>, oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (names_tx, mut names_rx) = mpsc::unbounded_channel();
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let release = release_rx;
        let (hold_tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let mut set = JoinSet::new();
        let mut clients = Vec::new();
        for _ in 0..count {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (socket, _) = listener.accept().await.unwrap();
            let names = names_tx.clone();
            let mut hold = hold_tx.subscribe();
            spread.spawn(&mut set, socket, move |mut socket| async move {
                let name = std::thread::current().name().unwrap_or_default().to_owned();
                // The socket works on its new thread: echo one byte.
                let mut byte = [0; 1];
                socket.read_exact(&mut byte).await.unwrap();
                socket.write_all(&byte).await.unwrap();
                names.send(name).unwrap();
                let _ = hold.recv().await;
            });
            client.write_all(b"x").await.unwrap();
            let mut echo = [0; 1];
            client.read_exact(&mut echo).await.unwrap();
            assert_eq!(&echo, b"x");
            clients.push(client);
        }
        let mut names = Vec::new();
        for _ in 0..count {
            names.push(names_rx.recv().await.unwrap());
        }
        tokio::spawn(async move {
            let _ = release.await;
            let _ = hold_tx.send(());
        });
        (set, names, clients, release_tx)
    }

    #[tokio::test]
    async fn connections_are_spread_evenly_and_counted_until_they_close() {
        let threads = ConnectionThreads::start(3).unwrap();
        let spread = Spread::over(&threads);
        let (mut set, names, _clients, release) = accept_into(&spread, 6).await;
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            ["connections-0", "connections-0", "connections-1", "connections-1"]
                .into_iter()
                .chain(["connections-2", "connections-2"])
                .collect::<Vec<_>>()
        );
        assert_eq!(spread.open(), [2, 2, 2]);
        // Another listener counts its own.
        assert_eq!(Spread::over(&threads).open(), [0, 0, 0]);
        release.send(()).unwrap();
        while set.join_next().await.is_some() {}
        assert_eq!(spread.open(), [0, 0, 0]);
    }

    #[tokio::test]
    async fn a_new_connection_goes_where_one_closed() {
        let threads = ConnectionThreads::start(2).unwrap();
        let spread = Spread::over(&threads);
        let (_first, _, _a, _release_first) = accept_into(&spread, 1).await;
        let (mut second, names, _b, release_second) = accept_into(&spread, 1).await;
        assert_eq!(names, ["connections-1"]);
        assert_eq!(spread.open(), [1, 1]);
        release_second.send(()).unwrap();
        while second.join_next().await.is_some() {}
        assert_eq!(spread.open(), [1, 0]);
        // Taking turns would give the first thread a second connection.
        let (_third, names, _c, _release_third) = accept_into(&spread, 1).await;
        assert_eq!(names, ["connections-1"]);
        assert_eq!(spread.open(), [1, 1]);
    }

    /// The socket is registered with its thread's reactor: it keeps working after the
    /// runtime that accepted it is gone.
    #[test]
    fn a_connection_outlives_the_runtime_that_accepted_it() {
        use std::io::{Read, Write};
        let threads = ConnectionThreads::start(1).unwrap();
        let spread = Spread::over(&threads);
        let accepting = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (set, mut client) = accepting.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (socket, _) = listener.accept().await.unwrap();
            let mut set = JoinSet::new();
            spread.spawn(&mut set, socket, |mut socket| async move {
                let mut byte = [0; 1];
                while socket.read_exact(&mut byte).await.is_ok() {
                    if socket.write_all(&byte).await.is_err() {
                        break;
                    }
                }
            });
            (set, client)
        });
        drop(accepting);
        client.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        for byte in [b'a', b'b'] {
            client.write_all(&[byte]).unwrap();
            let mut echo = [0; 1];
            client.read_exact(&mut echo).unwrap();
            assert_eq!(echo, [byte]);
        }
        drop(set);
        threads.stop();
    }

    /// Stopping waits for the blocking work of the tasks on the threads, and cancels the
    /// tasks still waiting.
    #[test]
    fn stopping_waits_for_blocking_work_and_cancels_the_rest() {
        let threads = ConnectionThreads::start(2).unwrap();
        let spread = Spread::over(&threads);
        let finished = Arc::new(AtomicUsize::new(0));
        let accepting = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (_set, _clients) = accepting.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut set = JoinSet::new();
            let mut clients = Vec::new();
            for _ in 0..2 {
                clients.push(TcpStream::connect(listener.local_addr().unwrap()).await.unwrap());
                let (socket, _) = listener.accept().await.unwrap();
                let (finished, started) = (Arc::clone(&finished), started_tx.clone());
                spread.spawn(&mut set, socket, move |_socket| async move {
                    let _ = tokio::task::spawn_blocking(move || {
                        started.send(()).unwrap();
                        // Stands for a recording's last writes.
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        finished.fetch_add(1, Ordering::SeqCst);
                    })
                    .await;
                    // Never reached: the runtime is stopped while the task waits here.
                    std::future::pending::<()>().await;
                });
            }
            (set, clients)
        });
        for _ in 0..2 {
            started_rx.recv().unwrap();
        }
        threads.stop();
        assert_eq!(finished.load(Ordering::SeqCst), 2);
        assert_eq!(spread.open(), [0, 0]);
    }

    #[tokio::test]
    async fn without_threads_connections_run_here() {
        let spread = Spread::here();
        let (mut set, names, _clients, release) = accept_into(&spread, 2).await;
        let here = std::thread::current().name().unwrap_or_default().to_owned();
        assert_eq!(names, [here.clone(), here]);
        assert!(spread.open().is_empty());
        release.send(()).unwrap();
        while set.join_next().await.is_some() {}
    }

    #[test]
    fn the_thread_count_is_bounded() {
        assert_eq!(thread_count(0), 1);
        assert_eq!(thread_count(3), 3);
        assert_eq!(thread_count(usize::MAX), usize::from(MAX_THREADS));
        assert_eq!(ConnectionThreads::start(0).unwrap().len(), 1);
    }
}
